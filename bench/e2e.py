"""`python -m bench e2e`: the whole device path at the camera's rate, against the brief's end-to-end target.

Synthetic 640×480 RGB-D at --fps (paced like a camera) → redaction (CenterFace) → odometry/keyframes/
clouds → encode + spool → MQTT QoS 1 → a local mosquitto → `crowdcap ingest` in a separate process (as
the backend would be). Reports frames captured / dropped before redaction / withheld / ingested, the
sustained output rate, latency capture → written by the ingest (p50/p99; stricter than capture →
broker ack), per-stage latency, and the device process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

_INGEST = """
import json, sys, threading, time
from uplink.backend.ingest import Ingest
ing = Ingest(sys.argv[1], sys.argv[2])
t = threading.Thread(target=ing.run, kwargs={"idle_exit": float(sys.argv[3])}, daemon=True)
t.start()
deadline = time.monotonic() + 30
while not ing.connected and time.monotonic() < deadline:
    time.sleep(0.02)
print("ready" if ing.connected else "not-connected", flush=True)
t.join()
print(json.dumps(ing.stats()), flush=True)
"""


def main(argv: list[str]) -> dict[str, Any]:
    from device import config as config_mod
    from device import settings
    from device.runtime import Service
    from uplink.embedded import start_broker

    ap = argparse.ArgumentParser(prog="python -m bench e2e", description=__doc__)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--prerender", type=int, default=0, metavar="N",
                    help="render N frames before the run and loop them (a camera costs no CPU to render; "
                         "this takes the synthetic renderer's ~11 ms/frame out of the device's budget)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. redact.threads=1 (repeatable)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="crowdcap-e2e-"))
    url, stop_broker = start_broker()
    ingest = subprocess.Popen([sys.executable, "-c", _INGEST, url, str(work / "ingest"), "4"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert ingest.stdout is not None
        if ingest.stdout.readline().strip() != "ready":
            raise RuntimeError("the ingest could not subscribe")
        cfg = config_mod.override(config_mod.load(), **{
            "uplink.broker": url, "uplink.spool_dir": str(work / "spool"), "device.state_dir": str(work / "state"),
            "capture.fps": args.fps, "device.id": "bench-e2e"})
        for item in args.set:
            key, _, value = item.partition("=")
            cfg = config_mod.override(cfg, **{key: settings.parse_text(value)})
        n = int(args.seconds * args.fps)
        source = None
        if args.prerender:
            from capture.synthetic import SyntheticSource

            source = SyntheticSource(cfg.capture.width, cfg.capture.height, args.fps, pace="realtime",
                                     device_id="bench-e2e", session_id="prerendered", cycle=args.prerender)
            source._cache.extend(source.render(i) for i in range(args.prerender))
        service = Service(cfg, max_frames=n, source=source)
        cpu0 = time.process_time()
        t0 = time.monotonic()
        service.start()
        service.wait()
        service.stop(timeout=10)
        capture_s = time.monotonic() - t0
        delivered = service.drain(60)
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        status = service.status()
        service.close()
        out, _ = ingest.communicate(timeout=60)
        ingest_stats = json.loads(out.strip().splitlines()[-1])
    finally:
        if ingest.poll() is None:
            ingest.kill()
        stop_broker()
    frames = [json.loads(line) for p in (work / "ingest").glob("*/*/frames.jsonl")
              for line in p.read_text().splitlines()]
    lat = np.array([f["latency_s"] for f in frames]) * 1000 if frames else np.zeros(1)
    stages = status["stages"]
    return {
        "bench": "e2e",
        "resolution": f"{cfg.capture.width}x{cfg.capture.height}",
        "camera_fps": args.fps,
        "overrides": args.set,
        "source": f"synthetic, {args.prerender} frames pre-rendered and looped" if args.prerender
                  else "synthetic, rendered live in the device process",
        "seconds": round(capture_s, 2),
        "frames_captured": status["frames_captured"],
        "dropped_before_redaction": status["frames_dropped"],
        "withheld": stages["redact"]["withheld"],
        "frames_spooled": stages["uplink"]["frames_out"],
        "frames_ingested": ingest_stats.get("frame", 0),
        "duplicates_at_ingest": ingest_stats.get("duplicate", 0),
        "all_delivered": delivered,
        "output_fps": round(stages["uplink"]["frames_out"] / capture_s, 2),
        "latency_capture_to_ingest_ms": {"p50": round(float(np.percentile(lat, 50)), 1),
                                         "p99": round(float(np.percentile(lat, 99)), 1)},
        "stage_latency_ms_p50_p99": {k: [v["latency_ms_p50"], v["latency_ms_p99"]] for k, v in stages.items()},
        "device_cpu_cores_used": round(cpu / wall, 2),
        "device_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "targets": {"output_fps": ">= 30 sustained", "latency_p99_ms": "<= 150", "peak_rss_mb": "<= 400"},
    }
