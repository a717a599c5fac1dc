"""`python -m bench face_cpu [--frames N] [--hard-frames N] [--seed S] [--set KEY=JSON ...]`: where the
default face path's CPU goes, per frame, by component.

The stage (faces-only policy, as `bench redact` runs it) is driven through `push`/`flush` over the
same sets as `bench redact` (synthetic, the astronaut sets, the hard cases), frames stamped at 30 fps.
Functions of the face path are wrapped and their process CPU time accumulated *exclusively* (a
wrapped callee's time is not counted again in its caller): onnxruntime runs by model and input
size (key-frame RetinaFace, re-check mosaics, CenterFace's scheduled pass, the between pass, the
canary), painting, motion, tracker, projection, decoding, input tensors, the rest of the stage. The
wrappers cost a little themselves: read shares, and compare totals with `bench redact` only roughly.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


class _Meter:
    def __init__(self) -> None:
        self.cpu: defaultdict[str, float] = defaultdict(float)
        self.calls: defaultdict[str, int] = defaultdict(int)
        self.stack: list[str] = []

    def timed(self, label: str, f: Any, *a: Any, **k: Any) -> Any:
        c = time.process_time()
        self.stack.append(label)
        try:
            return f(*a, **k)
        finally:
            self.stack.pop()
            dt = time.process_time() - c
            self.cpu[label] += dt
            self.calls[label] += 1
            if self.stack:
                self.cpu[self.stack[-1]] -= dt

    def wrap(self, owner: Any, name: str) -> None:
        f = getattr(owner, name)
        label = f"{getattr(owner, '__name__', owner)}.{name}"

        @functools.wraps(f)
        def g(*a: Any, **k: Any) -> Any:
            return self.timed(label, f, *a, **k)

        setattr(owner, name, g)


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench face_cpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--hard-frames", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="redact config override")
    args = ap.parse_args(argv)

    import redact.bracket as bracket_mod
    import redact.detector as detector_mod
    import redact.motion as motion_mod
    import redact.proof as proof_mod
    import redact.runtime as runtime_mod
    import redact.segment as segment_mod
    import redact.stage as stage_mod
    import redact.tracker as tracker_mod
    from bench._astronaut import astronaut_flash, astronaut_small
    from capture.hard_faces import CASES, hard_case
    from capture.synthetic import SyntheticSource
    from redact import build_stage
    from redact.config import RedactConfig

    m = _Meter()
    for owner, names in ((detector_mod.Detector, ("run", "verify", "_infer")), (detector_mod, ("to_blob",)),
                         (stage_mod.RedactStage, ("_scheduled_verifier_pass", "between_pass", "finish", "_detect",
                                                  "track_regions", "_kept")),
                         (motion_mod.Motion, ("step",)), (tracker_mod.Tracker, ("update",)),
                         (proof_mod.Canary, ("check",)), (segment_mod, ("paint",)),
                         (bracket_mod.Bracket, ("_project", "_between_back", "push", "_resolve"))):
        for name in names:
            m.wrap(owner, name)
    session_run = runtime_mod.Session.run

    def run(self: Any, blob: Any, run_options: Any) -> Any:
        return m.timed(f"onnxruntime {self.card.name} {blob.shape[3]}x{blob.shape[2]}", session_run, self, blob,
                       run_options)

    runtime_mod.Session.run = run  # type: ignore[method-assign]

    src = SyntheticSource(640, 480, pace="fast", seed=args.seed, n_frames=max(args.frames, args.hard_frames))
    src.open()
    frames = list(iter(src.read, None))
    frames = [f.replace(t_mono_ns=frames[0].t_mono_ns + round(i * 1e9 / 30)) for i, f in enumerate(frames)]
    synthetic = frames[:args.frames]
    sets = {"synthetic": synthetic, "astronaut_far_walk": astronaut_small(synthetic, popin=False)[0],
            "astronaut_far_popin": astronaut_small(synthetic, popin=True)[0],
            "astronaut_flash_2frames": astronaut_flash(synthetic)[0]}
    for case in CASES if args.hard_frames else ():
        sets[f"hard_{case}"] = hard_case(case, frames[:args.hard_frames], args.seed)[0]
    policy = Path(tempfile.mkdtemp(prefix="bench-face-cpu-")) / "faces-only.toml"
    policy.write_text('version = "bench-faces-only"\n[[rules]]\nclass = "face"\naction = "blur"\n'
                      'margin = 0.35\nmin_score = 0.2\napplies_to = "both"\n')
    overrides = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    stage = build_stage(RedactConfig(policy=str(policy), floor="lowered", budget_ms=10000.0, **overrides))
    for set_frames in sets.values():  # warm-up: first runs allocate
        stage.push(set_frames[0])
        stage.flush()
        stage.tracker.reset()
        stage.bracket.reset()
    m.cpu.clear()
    m.calls.clear()
    total, n, per_set = 0.0, 0, {}
    for name, set_frames in sets.items():
        c = time.process_time()
        for f in set_frames:
            stage.push(f)
        stage.flush()
        spent = time.process_time() - c
        stage.tracker.reset()
        stage.bracket.reset()
        per_set[name] = round(spent / len(set_frames) * 1000, 2)
        total += spent
        n += len(set_frames)
    parts = {k: {"cpu_ms_per_frame": round(v / n * 1000, 3), "share": round(v / total, 3), "calls": m.calls[k]}
             for k, v in sorted(m.cpu.items(), key=lambda kv: -kv[1])}
    return {"frames": n, "load_avg_1min": round(os.getloadavg()[0], 2), "config": overrides,
            "cpu_ms_per_frame": round(total / n * 1000, 2), "cpu_ms_per_frame_by_set": per_set,
            "by_component": parts, "unattributed_cpu_ms_per_frame": round((total - sum(m.cpu.values())) / n * 1000, 3)}
