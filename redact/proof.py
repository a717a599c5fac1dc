"""Detectors prove they see: a start-up proof on the reference frames, and a canary while running.

A model can load, run, return well-formed outputs and still see nothing (all-zero outputs, one bias
changed, a fault that starts after some frames). Shape checks cannot catch that; only showing it a
known face can.

* `prove(detector)` — at start, before the first frame is accepted: the detector must find every
  known object of each of its classes that has reference frames (`redact.reference`), and its
  canary patch, at its card's own threshold. A detector that fails is not loaded (every frame is withheld `no_model`, status
  says why). A class that must be proven (`MUST_PROVE`: faces) without reference frames fails too;
  other classes without references are loaded and listed as `unproven` in status.
* `Canary` — while running: every `redact.canary_every` frames (default: every frame; ~1.5 ms for
  CenterFace on the 96×96 patch), after the frame's detection and inside its time budget, each
  detector runs its class's canary patch. A miss withholds the frame (`canary_missed`) and every
  following one until the canary is found again; the canary then runs on every frame.
  Why frames, not seconds: with a timer a model that goes silent leaks every frame until the next
  tick; with a count of N frames, only faces that are *not already tracked* can slip in the last
  N-1 frames (tracked ones are held `hold_frames`). N = 1 leaves no window.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from capture.frame import FrameWithheld
from redact import reference
from redact.detector import Deadline, Detector, Pass

log = logging.getLogger("crowdcap.redact")

MUST_PROVE = frozenset({"face"})

def slow_factor() -> float:
    """`CROWDCAP_SLOW_FACTOR` (≥ 1, default 1) stretches the fixed offline deadlines (this start-up proof,
    `crowdcap redact`'s per-image budget) for a machine far slower than a Pi core, e.g. arm64 under
    qemu (tools/arm64_smoke.sh). It never touches the live frame budget (`redact.budget_ms`), and a
    longer deadline only waits longer: nothing is detected less."""
    import os

    try:
        return max(1.0, float(os.environ.get("CROWDCAP_SLOW_FACTOR", "1")))
    except ValueError:
        return 1.0


PROOF_TIMEOUT_S = 10.0 * slow_factor()


def _whole(det: Detector, image: np.ndarray) -> Pass:
    h, w = image.shape[:2]
    return Pass(0, 0, w, h, 0.0 if det.card.input.size is not None else 1.0)


def _misses(det: Detector, ref: reference.Reference, run_options: Any) -> int:
    """How many known objects of `ref` the detector does not find at its card's threshold."""
    d = det.run(ref.image, _whole(det, ref.image), run_options, det.decoder.threshold)
    cid = det.card.classes.index(ref.cls)
    mine = d[d[:, 5] == cid] if len(d) else d
    return sum(not reference.covered(b, mine) for b in ref.boxes)


def prove(det: Detector) -> dict[str, Any]:
    """{"ok", "detail", "found": {cls: "k/n"}, "unproven": [cls]} for one loaded detector."""
    found: dict[str, str] = {}
    unproven: list[str] = []
    failures: list[str] = []
    t0 = time.perf_counter()
    try:
        with Deadline(PROOF_TIMEOUT_S) as dl:
            for cls in det.card.classes:
                refs = reference.frames(cls)
                if not refs:
                    if cls in MUST_PROVE:
                        failures.append(f"no reference frames for {cls}")
                    else:
                        unproven.append(cls)
                    continue
                total = sum(len(r.boxes) for r in refs)
                missed = sum(_misses(det, r, dl.options) for r in refs)
                found[cls] = f"{total - missed}/{total}"
                if missed:
                    failures.append(f"found {total - missed} of {total} known {cls}s in the reference frames")
                patch = reference.canary(cls)  # it must pass the canary too (and its shape is warmed up)
                if not missed and patch is not None and _misses(det, patch, dl.options):
                    failures.append(f"does not find the {cls} canary patch")
    except Exception as e:  # a model that raises, times out or returns garbage has not proven anything
        failures.append(f"failed on the reference frames ({type(e).__name__}: {e})")
    ms = round((time.perf_counter() - t0) * 1000.0, 1)
    name = f"{det.card.name} {det.card.version}"
    if failures:
        detail = f"{det.card.card_path}: self-test: {name} " + "; ".join(failures) + " (the model sees nothing it must see)"
        return {"ok": False, "detail": detail, "found": found, "unproven": unproven, "ms": ms}
    return {"ok": True, "detail": f"{name}: found " + ", ".join(f"{v} {k}" for k, v in found.items()),
            "found": found, "unproven": unproven, "ms": ms}


@dataclass
class Canary:
    """The running proof (see module doc). Not thread-safe: called from the stage's apply only."""

    every: int = 1
    proofs: list[dict[str, Any]] = field(default_factory=list)  # start-up results, for status
    runs: int = 0
    misses: int = 0
    failing: str = ""
    last_ms: float = 0.0
    _since: int = 0

    def check(self, detectors: list[Detector], t0: float, budget_ms: float) -> None:
        """Raise FrameWithheld("canary_missed") unless every detector finds its canary (when due)."""
        self._since += 1
        if self.every < 1 or (not self.failing and self._since < self.every):
            return
        self._since = 0
        remaining = budget_ms / 1000.0 - (time.perf_counter() - t0)
        if remaining <= 0:
            raise FrameWithheld("model_timeout", f"no time left in the {budget_ms:.0f} ms budget for the canary")
        c0 = time.perf_counter()
        missed = ""
        with Deadline(remaining) as dl:
            for det in detectors:
                for cls in det.card.classes:
                    patch = reference.canary(cls)
                    if patch is not None and _misses(det, patch, dl.options):
                        missed = f"{det.card.name}: the {cls} canary was not found: the model has stopped seeing"
                        break
                if missed:
                    break
        if dl.expired:
            raise FrameWithheld("model_timeout", f"the canary run missed the {budget_ms:.0f} ms budget")
        self.runs += 1
        self.last_ms = round((time.perf_counter() - c0) * 1000.0, 2)
        if missed:
            self.misses += 1
            if not self.failing:
                log.error("redaction canary: %s; every frame is withheld until it is found again", missed)
            self.failing = missed
            raise FrameWithheld("canary_missed", missed)
        if self.failing:
            log.warning("redaction canary found again: frames flow again (%s)", self.failing)
            self.failing = ""

    def status(self) -> dict[str, Any]:
        return {"every_frames": self.every, "runs": self.runs, "misses": self.misses,
                "state": "failing" if self.failing else "ok", "last_ms": self.last_ms,
                "self_test": [{k: p[k] for k in ("ok", "detail", "unproven", "ms")} for p in self.proofs]}
