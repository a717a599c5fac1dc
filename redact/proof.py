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
* `PassCanary` — the same for the forms schedule's text and person detectors, which run every few
  frames: after every `redact.forms_canary_every`-th pass of each (default: every pass) that found
  nothing itself (and at least every 4th), that detector runs its own patch (`pass_canary`: a
  rendered sign; the astronaut's head and shoulders).
  A miss withholds the frame (`canary_missed`) and lapses the detector's coverage, so every following
  frame runs a catch-up pass and the canary until it is found. Window: the frames between the last
  good pass and the next one (`text_every` / `person_every`), as for held boxes. The forms schedule
  loads a text or person model only when it finds its patch (redact/form_models.py).
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


# -- the text and person detectors: a canary on their own passes ---------------------------------------
def text_canary() -> reference.Reference:
    """A rendered sign, 160×64: dark "AB 123" on a light board over the reference background."""
    import cv2

    canvas = reference._background(160, 64, seed=24)
    cv2.rectangle(canvas, (4, 8), (156, 56), (245, 245, 245), -1)
    cv2.putText(canvas, "AB 123", (12, 46), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (15, 15, 15), 2)
    (w, h), base = cv2.getTextSize("AB 123", cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2)
    return reference.Reference("text", "text-canary", canvas, ((12.0, 46.0 - h, 12.0 + w, 46.0 + base),))


def person_canary() -> reference.Reference:
    """The astronaut's head and shoulders (a real photo, shipped in scikit-image), 160×192."""
    import cv2

    canvas = reference._background(160, 192, seed=23)
    head = reference._head()
    ph = 180
    pw = round(ph * head.shape[1] / head.shape[0])
    x, y = (160 - pw) // 2, 192 - ph
    canvas[y:y + ph, x:x + pw] = cv2.resize(head, (pw, ph), interpolation=cv2.INTER_AREA)
    return reference.Reference("person", "person-canary", canvas, ((float(x), float(y), float(x + pw), 192.0),))


PASS_CANARIES = {"text": text_canary, "person": person_canary}
SELF_PROOF_PASSES = 4  # a pass that found something needs no canary (it is not silent), this many in a row at most
_pass_patches: dict[str, reference.Reference] = {}


def pass_canary(cls: str) -> reference.Reference | None:
    """The canary patch a `cls` detector of the forms schedule must find after its passes (built once)."""
    if cls not in _pass_patches and cls in PASS_CANARIES:
        _pass_patches[cls] = PASS_CANARIES[cls]()
    return _pass_patches.get(cls)


@dataclass
class PassCanary:
    """The running proof of the forms schedule's detectors (text, person), which run every few frames.

    After every `every`-th pass of a detector (and after every pass while it is failing) the same
    detector runs its class's canary patch (`pass_canary`) at its card's threshold, inside that pass's
    deadline — unless that pass found something itself at the card's threshold (a silent model finds
    nothing), and then at the latest after SELF_PROOF_PASSES × `every` passes (a model stuck on one
    output finds "something" on every pass). The person canary is a whole SSD run (~0.8× a pass). A miss withholds the frame (`canary_missed`, the reason names the model) and lapses the
    detector's coverage, so that the next frame runs a catch-up pass and its canary again: frames are
    withheld until the canary is found. Counted per detector (`status()`: runs, misses, state, CPU-ms).
    Not thread-safe: called from the stage's apply only (through the forms schedule).
    """

    every: int = 1
    runs: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)
    failing: dict[str, str] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # of the canary runs (this thread)
    proven_by_pass: dict[str, int] = field(default_factory=dict)  # canaries left out: the pass found something
    _passes: dict[str, int] = field(default_factory=dict)
    _unchecked: dict[str, int] = field(default_factory=dict)

    def due(self, name: str, found: np.ndarray) -> bool:
        """Whether the pass of detector `name` that found `found` (N×≥5, at its card's threshold) must be
        followed by the canary. A pass that itself found something shows the model is not silent: its
        canary waits, but at most SELF_PROOF_PASSES passes (a model stuck on one output is caught too)."""
        self._passes[name] = self._passes.get(name, 0) + 1  # since the last canary run
        self._unchecked[name] = self._unchecked.get(name, 0) + 1  # since the last canary or self-proof
        if name in self.failing or self._passes[name] >= self.every * SELF_PROOF_PASSES:
            return True
        if self._unchecked[name] < self.every:
            return False
        if len(found):  # boxes at the card's own threshold: what the canary would have to find
            self.proven_by_pass[name] = self.proven_by_pass.get(name, 0) + 1
            self._unchecked[name] = 0
            return False
        return True

    def check(self, name: str, det: Detector, run_options: Any) -> None:
        """Run `det` on its canary (call after a pass of detector `name` when `due`); raise
        FrameWithheld("canary_missed") when it is not found."""
        patch = pass_canary(det.card.classes[0])
        if patch is None:
            return
        self._passes[name] = self._unchecked[name] = 0
        t = time.thread_time()
        missed = _misses(det, patch, run_options)
        self.cpu_ms[name] = self.cpu_ms.get(name, 0.0) + (time.thread_time() - t) * 1000.0
        self.runs[name] = self.runs.get(name, 0) + 1
        if missed:
            self.misses[name] = self.misses.get(name, 0) + 1
            why = f"{det.card.name}: the {patch.cls} canary was not found: the model has stopped seeing"
            if name not in self.failing:
                log.error("redaction canary: %s; every frame is withheld until it is found again", why)
            self.failing[name] = why
            raise FrameWithheld("canary_missed", why)
        if name in self.failing:
            log.warning("redaction canary found again: frames flow again (%s)", self.failing.pop(name))

    def status(self) -> dict[str, Any]:
        return {"every_passes": self.every, "runs": dict(self.runs), "misses": dict(self.misses),
                "proven_by_pass": dict(self.proven_by_pass),
                "state": {n: "failing" if n in self.failing else "ok" for n in self.runs},
                "cpu_ms_per_run": {n: round(v / max(self.runs.get(n, 0), 1), 2) for n, v in self.cpu_ms.items()}}
