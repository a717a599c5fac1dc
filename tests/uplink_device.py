"""A tiny device process for the SIGKILL fault test: an UplinkStage fed with frames, one line per
accepted frame on stdout. Usage: uplink_device.py SPOOL_DIR BROKER_URL FIRST_SEQ COUNT FPS"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from uplink_helpers import make_frame  # noqa: E402

from uplink import build_stage  # noqa: E402
from uplink.config import UplinkConfig  # noqa: E402


def main() -> int:
    spool, url, first, count, fps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    cfg = UplinkConfig(broker=url, spool_dir=spool, fsync="always", backoff_min=0.1, backoff_max=0.5,
                       max_payload=8192)
    stage = build_stage(cfg, "dev1", "s1")
    stage.start()
    print("ready", flush=True)
    t0 = time.monotonic()
    for i in range(count):
        delay = t0 + i / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stage.apply(make_frame(first + i))
        print(f"accepted {first + i}", flush=True)
    ok = stage.drain(float(__import__("os").environ.get("DRAIN", "60")))
    if not ok:
        print(stage.undelivered(), stage.status()["sender"], file=sys.stderr)
    stage.close()
    print(f"drained {ok}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
