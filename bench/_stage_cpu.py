"""CPU time per step inside the pipeline's stages, for `python -m bench e2e`.

Wraps named methods of a built service's stages with `time.thread_time()` accumulators (CPU of the
calling thread only, so the other core's work and waits are not counted). Steps that are not found
(a stage turned off, a renamed method) are skipped and listed under `missing`, never an error: the
bench must run against whatever the stages grow into. Overhead: two clock reads per call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

FACE_PART = "redact.face_part (split: detection + bracket thread)"
FINISH_PART = "redact.finish_part (split: forms' holds and reads, painting, manifest thread)"
FORMS_PART = "redact.forms_part (worker redact-forms: the forms' detector passes, ahead)"
PRIVATE_PART = "redact.private_part (worker redact-private: the wearer's private layer, ahead)"
PARTS = (FACE_PART, FINISH_PART, FORMS_PART, PRIVATE_PART)  # with split threads: redaction's CPU is their sum
OPTIONAL = PARTS  # only with split threads: not missing when off
# the parts that run in a worker are counted only there (inline, they are inside the finish part)
WORKER = {FORMS_PART: "redact-forms", PRIVATE_PART: "redact-private"}

# (stage name, dotted attribute path from the stage, report key)
STEPS: tuple[tuple[str, str, str], ...] = (
    ("redact", "_detect", "redact.detectors.faces (and scheduled verifier)"),
    ("redact", "forms.step", "redact.detectors.text_plates_persons (forms schedule)"),
    ("redact", "canary.check", "redact.canary"),
    ("redact", "private.apply", "redact.private (wearer's objects: SIFT, places, volumes, zones)"),
    ("redact", "_manifest", "redact.manifest"),
    ("redact", "apply", "redact.total"),
    # the pipeline drives a stage with push/flush (the face bracket) through them, never apply
    ("redact", "push", "redact.total"),
    ("redact", "flush", "redact.flush (face bracket: end of stream, stalls)"),
    # with redact.split_threads the pipeline drives the face part and the finish part (two threads)
    ("redact", "push_part", FACE_PART),
    ("redact-finish", "apply", FINISH_PART),
    ("redact", "forms.look", FORMS_PART),  # redact.forms_thread (redact/ahead.py)
    ("redact", "bracket.motion.step", "redact.bracket_motion"),
    ("depth", "_cloud", "depth.keyframe_cloud"),
    ("depth", "apply", "depth.total"),
    ("uplink", "spool.append", "uplink.spool_write"),
    ("uplink", "apply", "uplink.total (encode + sign + spool)"),
)


class StepCpu:
    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.missing: list[str] = []
        self.spool_latency_ms: list[float] = []  # capture (frame.t_mono) → spooled, per frame
        self._lock = threading.Lock()

    def time_to_spool(self, uplink: Any) -> None:
        inner: Callable[..., Any] = uplink.apply

        def timed(frame: Any) -> Any:
            out = inner(frame)
            self.spool_latency_ms.append((time.monotonic_ns() - frame.t_mono_ns) / 1e6)
            return out

        uplink.apply = timed

    def wrap(self, owner: Any, attr: str, key: str) -> None:
        inner: Callable[..., Any] = getattr(owner, attr)
        worker = WORKER.get(key)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if worker is not None and threading.current_thread().name != worker:
                return inner(*args, **kwargs)
            t0 = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                dt = time.thread_time() - t0
                with self._lock:
                    self.cpu[key] = self.cpu.get(key, 0.0) + dt
                    self.calls[key] = self.calls.get(key, 0) + 1

        setattr(owner, attr, timed)

    def report(self, frames: int) -> dict[str, Any]:
        """CPU-ms per captured frame for each step, and CPU-ms per call (a keyframe cloud is rarer)."""
        n = max(1, frames)
        out: dict[str, Any] = {k: {"cpu_ms_per_frame": round(v * 1000 / n, 2),
                                   "cpu_ms_per_call": round(v * 1000 / max(1, self.calls[k]), 2),
                                   "calls": self.calls[k]} for k, v in self.cpu.items()}
        if FINISH_PART in self.cpu and not self.calls.get("redact.total"):  # split threads: the two parts
            self.cpu["redact.total"] = sum(self.cpu.get(k, 0.0) for k in PARTS)
            self.calls["redact.total"] = self.calls[FINISH_PART]
            out["redact.total"] = {"cpu_ms_per_frame": round(self.cpu["redact.total"] * 1000 / n, 2),
                                   "cpu_ms_per_call": round(self.cpu["redact.total"] * 1000 / max(1, self.calls["redact.total"]), 2),
                                   "calls": self.calls["redact.total"]}
        total = self.cpu.get("redact.total")
        if total is not None:  # actions (blur/fill), copies, region bookkeeping: redaction minus its named steps
            named = sum(v for k, v in self.cpu.items()
                        if k.startswith("redact.") and k not in ("redact.total", "redact.flush (face bracket: end of stream, stalls)",
                                                                 FACE_PART, FINISH_PART, PRIVATE_PART))
            out["redact.rest (actions, copies, bookkeeping)"] = {"cpu_ms_per_frame": round((total - named) * 1000 / n, 2)}
        if self.missing:
            out["missing"] = self.missing
        return out


def instrument(stages: dict[str, Any]) -> StepCpu:
    """Wrap the steps of `stages` (name → stage object) that exist; returns the accumulator."""
    steps = StepCpu()
    for stage_name, path, key in STEPS:
        owner = stages.get(stage_name)
        *parents, attr = path.split(".")
        for part in parents:
            owner = getattr(owner, part, None) if owner is not None else None
        if owner is None or not callable(getattr(owner, attr, None)):
            if key not in OPTIONAL:
                steps.missing.append(key)
            continue
        steps.wrap(owner, attr, key)
    try:  # made lazily per camera/session: time the class's method
        from depth import stage as depth_stage

        steps.wrap(depth_stage.Odometry, "track", "depth.odometry")
    except (ImportError, AttributeError) as e:
        steps.missing.append(f"depth.odometry ({e})")
    if stages.get("uplink") is not None:
        steps.time_to_spool(stages["uplink"])
    try:  # the private layer's worker calls it by module attribute (redact/ahead.py)
        from redact import ahead

        steps.wrap(ahead, "run_private", PRIVATE_PART)
    except (ImportError, AttributeError) as e:
        steps.missing.append(f"redact private part ({e})")
    try:  # module-level encoders the uplink stage calls by module attribute
        from uplink import messages, wire

        steps.wrap(messages, "encode_frame", "uplink.encode_frame (JPEG + depth codec)")
        steps.wrap(messages, "encode_cloud", "uplink.encode_cloud")
        steps.wrap(wire, "encode", "uplink.wire_encode (framing, CRC, signature)")
    except (ImportError, AttributeError) as e:
        steps.missing.append(f"uplink encoders ({e})")
    return steps
