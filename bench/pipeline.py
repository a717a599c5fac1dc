"""`python -m bench pipeline`: what the spine itself costs.

Synthetic 640×480 RGB-D (pre-rendered, so the renderer is not measured) through redact/depth/uplink
pass-through stages, with the source paced at each rate in --rates: frames/s out, drops (the capture
queue drops the oldest when the stages fall behind), and the latency the spine adds from capture to
the last stage (p50/p99). Peak RSS of the process at the end.
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

from capture.synthetic import SyntheticSource
from device.passthrough import PassThrough
from device.pipeline import Pipeline


def _run(frames: int, pace: str, fps: float) -> dict[str, Any]:
    src = SyntheticSource(640, 480, fps=fps, pace=pace, n_frames=frames, cycle=30)
    for i in range(30):  # warm the cache outside the timed run
        src._cache.append(src.render(i))
    src.open()  # starts the pacing clock
    stages = [PassThrough("redact"), PassThrough("depth"), PassThrough("uplink")]
    p = Pipeline(src, stages, capture_queue=4, stage_queue=8)
    t0 = time.perf_counter()
    p.run(timeout=600)
    wall = time.perf_counter() - t0
    snap = p.snapshot()
    return {
        "frames": frames,
        "frames_out": snap["frames_out"],
        "frames_dropped": snap["frames_dropped"],
        "seconds": round(wall, 3),
        "fps_out": round(snap["frames_out"] / wall, 1),
        "added_latency_ms_p50": snap["latency_ms_p50"],
        "added_latency_ms_p99": snap["latency_ms_p99"],
    }


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench pipeline", description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0, help="run length at each rate")
    ap.add_argument("--rates", default="30,200,400,800", help="source rates to try, frames/s")
    args = ap.parse_args(argv)
    runs = {}
    for rate in (float(r) for r in args.rates.split(",")):
        runs[f"{rate:g}fps"] = _run(int(rate * args.seconds), "realtime", rate)
    sustained = max((float(k[:-3]) for k, r in runs.items() if r["frames_dropped"] == 0), default=0.0)
    return {
        "bench": "pipeline",
        "resolution": "640x480",
        "stages": ["redact(pass)", "depth(pass)", "uplink(pass)"],
        "runs": runs,
        "max_rate_without_drops_fps": sustained,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "targets": {"sustained_fps": ">= 200", "added_latency_ms_p99": "<= 5"},
    }
