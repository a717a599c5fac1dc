"""`crowdcap record --source ... --out DIR --seconds N`: record redacted frames in the TUM layout.

Frames are written only after redaction (raw frames never touch disk), with poses from the depth
stage when it runs (trajectory.txt, keyframes.txt), each frame's redaction manifest (manifests.jsonl),
so the folder replays with `--source replay:DIR` and opens in any TUM tool. A `--no-redact` recording
is marked: an `UNREDACTED` file in the folder and a warning before and after. A replay at `--pace fast`
is recorded whole (backpressure, no drops).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from device.commands.run import add_common_flags, load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record redacted RGB-D to a TUM-layout folder", description=__doc__)
    add_common_flags(p)
    p.add_argument("--out", required=True, help="output folder (created; must be empty or new)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to record (default 10)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.set_defaults(func=run, broker=None, spool=None, drain_timeout=None)


def run(args: argparse.Namespace) -> int:
    from device.cli import CliError
    from device.runtime import Service

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise CliError(f"--out {out}: folder is not empty (choose a new folder; recordings are never overwritten)")
    if not math.isfinite(args.seconds) or args.seconds <= 0:  # nan would record until killed
        raise CliError(f"--seconds: expected a positive number, got {args.seconds}")
    from device.progress import Progress, words

    cfg = load_config(args)
    loud = "WARNING: --no-redact: this recording is NOT redacted (raw images and depth); marked UNREDACTED"
    if not cfg.redact.enabled:
        print(loud, file=sys.stderr)
    service = Service(cfg, max_frames=args.max_frames, record_dir=out)
    service.install_signal_handlers()
    t0 = time.monotonic()
    progress = Progress("record", args.seconds)

    def tick(s: Service) -> None:
        snap = s.pipeline.snapshot()
        progress.update(time.monotonic() - t0, captured=snap["frames_captured"],
                        written=s.stages["record"].writer.frames,  # type: ignore[attr-defined]
                        dropped=snap["frames_dropped"])

    try:
        service.start()
        service.wait(until=t0 + args.seconds, tick=tick)
        service.stop(timeout=5.0)
        snap = service.pipeline.snapshot()
    finally:
        progress.close(min(args.seconds, time.monotonic() - t0))
        service.close()
    written = service.stages["record"].writer.frames  # type: ignore[attr-defined]
    withheld = {k: v for k, v in snap.get("stages", {}).get("redact", {}).get("withheld", {}).items() if v}
    print(f"recorded {written} frames to {out} (captured {snap['frames_captured']}, dropped before redaction "
          f"{snap['frames_dropped']}, withheld {words(withheld)})", file=sys.stderr)
    if not cfg.redact.enabled:
        print(loud, file=sys.stderr)
    return 0
