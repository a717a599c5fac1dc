"""The forms schedule's detector passes on one frame (its first half): what ran, what it found.

`FormSchedule` (redact/schedule.py) works in two halves so that the costly half can run ahead:
  * **`Passes.run(color, shift, t0) -> Looked`** (here): the camera's shift, which detector is due on
    this frame (text every `text_every`, persons every `person_every`, staggered; deferred while still
    held when the budget is short), the passes themselves with their canary, screens from the text
    pass, and the edge pass's strips. Nothing here needs the frame's faces, so with split threads it
    runs in the "redact-forms" worker as soon as the frame arrives (redact/ahead.py), while the frame
    waits for its face bracket: its cost leaves the frame's latency instead of adding to it.
  * `FormSchedule.step(..., looked)`: with the faces known, the holds stepped and refreshed, the forms
    evaluated (the recogniser reads lines), coverage per class, the regions (redact/schedule.py).
Both halves see every frame in order, each in one thread. The second one learns everything from the
`Looked` it gets: the frame's number in the stream and the camera's summed shift — so a frame that
never reaches it (withheld before its finish, e.g. with the key frame of its bracket) leaves a gap that
the next frame's step closes (holds moved by the summed shift and aged by the frames between). A pass
it never absorbed vouches for nothing: coverage there is counted from passes it absorbed.

The frame's budget here starts at `t0`: its arrival in the worker (ahead) or, one thread, after the
face detection (what is left of the frame's budget).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from capture.frame import FrameWithheld
from redact.config import RedactConfig
from redact.form_models import Models
from redact.forms import Found
from redact.hold import Exposed
from redact.motion import Motion
from redact.proof import PassCanary
from redact.runtime import ModelRunError
from redact.screens import find_screens

EDGE_MARGIN = 32  # px an edge pass's strip reaches into what the last whole pass saw (lines it cuts)
CATCH_UP_MS = 1000.0  # at least this for a pass restoring lapsed coverage (start, after a stall)
NEVER = 1 << 30  # "frames since the last pass" of a detector that has not run (or whose pass failed)


def text_scale(width: int, height: int, cfg: RedactConfig) -> float:
    """The text detector's resize of a frame: down to fit text_width × text_height; a small image (short
    side < text_min_side) up towards text_min_side within them. DB was trained on upscaled images: at
    their native size small photos of handwriting or signs give a probability map of zero (skimage's
    `text`: nothing at 1×, lines found from 2.5×)."""
    fit = min(cfg.text_width / width, cfg.text_height / height)
    want = max(1.0, cfg.text_min_side / max(min(width, height), 1))
    return min(fit, want)


@dataclass
class Looked:
    """What the passes saw on one frame (in memory only): for `FormSchedule.step`."""

    n: int  # the frame's number in this schedule's stream (1, 2, ...)
    offset: np.ndarray  # the camera's summed image shift (x, y) since the stream began, at this frame
    fresh: dict[str, Found] = field(default_factory=dict)  # boxes of the passes that ran: text, person, screen
    edge: np.ndarray | None = None  # N×5 text boxes of the edge pass (strips that came into view)
    ms: dict[str, float] = field(default_factory=dict)  # per detector (and "text_edge", "screen")
    lapsed: set[str] = field(default_factory=set)  # detectors whose pass failed: their coverage lapses
    error: BaseException | None = None  # a pass raised it: the frame is withheld with it


class Passes:
    def __init__(self, cfg: RedactConfig, models: Models, detectors: set[str]) -> None:
        self.cfg = cfg
        self.models = models
        self.detectors = detectors
        self.every = {"text": cfg.text_every, "person": cfg.person_every, "screen": cfg.text_every}
        # One frame beyond the rate at least: two passes due on one frame (text every 12, persons every
        # 15: every 60th frame) spread over two frames rather than one frame carrying both.
        self.limit = {d: max(self.every[d] + 1, cfg.hold_frames) for d in self.every}
        self.age = {d: NEVER for d in self.every}  # frames since the detector's last pass (its schedule)
        self.canary = PassCanary(cfg.forms_canary_every)
        self._motion = Motion()
        self._exposed = Exposed()  # what came into view since the text detector's last whole pass
        self._offset = np.zeros(2)
        self._n = 0
        self.lock = threading.Lock()  # the counters below (status reads them from other threads)
        self.ms: Counter[str] = Counter()
        self.cpu: Counter[str] = Counter()  # CPU-ms of the passes (this thread; canary included)
        self.passes: Counter[str] = Counter()
        self.deferred: Counter[str] = Counter()

    def reset(self) -> None:
        """Forget the passes (unrelated stills follow): the next frame runs every detector."""
        self.age = {d: NEVER for d in self.every}
        self._motion.reset()
        self._exposed.reset()

    def run(self, color: np.ndarray, shift: tuple[float, float] | None, t0: float, key: bool = False) -> Looked:
        """The passes due on this frame. `shift`: the camera's image shift since the previous frame
        when the caller measured it already (the face bracket does: redact/bracket.py); None: measured
        here. `key`: a face key frame — the frames of its bracket are released when its detection is
        done, so a pass on it would hold them up; a due pass still held waits for the next frame, the
        one that waits longest for its bracket (with text every 12 and face_every 4, every text pass
        fell on a key frame). Never raises: a pass's fault is in `Looked.error`."""
        dx, dy = self._motion.step(color) if shift is None else shift
        self._n += 1
        self._offset = self._offset + (dx, dy)
        self._exposed.step(dx, dy)
        for d in self.age:
            self.age[d] += 1
        looked = Looked(self._n, self._offset.copy())
        try:
            self._run_due(color, t0, looked, key)
        except Exception as e:  # noqa: BLE001 - carried to the frame's step, which withholds it
            looked.error = e
        with self.lock:
            self.ms.update(looked.ms)
        return looked

    def _run_due(self, color: np.ndarray, t0: float, looked: Looked, key: bool) -> None:
        from redact.detector import Deadline

        due = [d for d in ("text", "person") if d in self.detectors and self.age[d] >= self.every[d]]
        due.sort(key=lambda d: self.age[d] - self.every[d], reverse=True)  # the most overdue first
        fresh, ms = looked.fresh, looked.ms
        for d in due:
            left_ms = self.cfg.budget_ms - (time.perf_counter() - t0) * 1000.0
            estimate = self.ms[d] / max(self.passes[d], 1) if self.passes[d] else 0.0
            # Still covered by holding: leave it for a frame with time left, or (one frame late at
            # most) for a frame without another pass, so that passes spread over frames.
            spread = bool(fresh) and self.every[d] > 1 and self.age[d] == self.every[d]
            if self.age[d] < self.limit[d] and (estimate > left_ms or spread or key):
                self.deferred[d] += 1
                continue
            t, cpu = time.perf_counter(), time.thread_time()
            try:
                # A pass that restores lapsed coverage (at start, after a stall) gets a time limit of its
                # own: the frame is late once rather than withheld on every try under load.
                allowed = max(self.cfg.budget_ms, CATCH_UP_MS) if self.age[d] > self.limit[d] else left_ms
                with Deadline(max(allowed, 1.0) / 1000.0) as deadline:
                    fresh[d] = self._detect(d, color, deadline.options)
                    if self.canary.due(d, fresh[d].boxes):  # the model must still see its known patch (redact/proof.py)
                        self.canary.check(d, self.models.get(d), deadline.options)
            except FrameWithheld:
                # Its boxes of this pass are not trusted and its coverage lapses: the next frame runs a
                # catch-up pass and the canary again; frames are withheld until the canary is found.
                lapsed = {d, "screen"} if d == "text" else {d}
                for x in lapsed:
                    self.age[x] = NEVER
                looked.lapsed |= lapsed
                fresh.pop(d, None)
                raise
            except ModelRunError as e:
                if e.reason != "model_timeout" or self.age[d] > self.limit[d]:
                    raise
                self.deferred[d] += 1
                continue
            ms[d] = (time.perf_counter() - t) * 1000.0
            with self.lock:
                self.cpu[d] += (time.thread_time() - cpu) * 1000.0
                self.passes[d] += 1
            self.age[d] = 0
            if d == "text":
                self.age["screen"] = 0
                self._exposed.reset()
        if "text" in fresh and "screen" in self.detectors:  # bright rectangles with text (redact/screens.py)
            t = time.perf_counter()
            fresh["screen"] = Found(find_screens(color, fresh["text"].boxes))
            ms["screen"] = (time.perf_counter() - t) * 1000.0
        if (self.cfg.text_edge_pass and "text" in self.detectors and "text" not in fresh and self.every["text"] >= 4
                and self.age["text"] == self.every["text"] // 2):
            looked.edge = self._edge_pass(color, t0, ms)

    def _edge_pass(self, color: np.ndarray, t0: float, ms: dict[str, float]) -> np.ndarray | None:
        """Half-way between whole text passes: the text detector on the strips that came into view
        since the last one (the camera's shift, redact/hold.py `Exposed`), so that text entering the
        frame (a plate as the wearer turns) waits half the interval. Its lines (and the text forms made
        of them, by the step) join the holds without replacing any: the strip saw part of the frame.
        They are not read — a form's `match` counts them as matches (private) until a whole pass reads
        them. Coverage still comes from the whole passes (a strip vouches for no class)."""
        from redact.detector import Deadline, Pass

        h, w = color.shape[:2]
        strips = self._exposed.strips(w, h, EDGE_MARGIN)
        if not strips:
            return None
        left_ms = self.cfg.budget_ms - (time.perf_counter() - t0) * 1000.0
        t, cpu = time.perf_counter(), time.thread_time()
        det, scale = self.models.get("text"), text_scale(w, h, self.cfg)
        try:
            with Deadline(max(left_ms, 1.0) / 1000.0) as deadline:
                found = [det.run(color, Pass(x, y, sw, sh, scale), deadline.options) for x, y, sw, sh in strips]
        except ModelRunError as e:
            if e.reason != "model_timeout":
                raise
            self.deferred["text_edge"] += 1
            return None
        ms["text_edge"] = (time.perf_counter() - t) * 1000.0
        with self.lock:
            self.cpu["text_edge"] += (time.thread_time() - cpu) * 1000.0
            self.passes["text_edge"] += 1
        return np.concatenate(found)[:, :5].astype(np.float64)

    def _detect(self, d: str, color: np.ndarray, run_options: Any) -> Found:
        det = self.models.get(d)
        h, w = color.shape[:2]
        size = (self.cfg.text_width, self.cfg.text_height) if d == "text" else (w, h)
        whole, _ = det.plan(w, h, size, (0, 0))
        if d == "text":
            whole = replace(whole, scale=text_scale(w, h, self.cfg))
        found = det.run(color, whole, run_options)
        return Found(found[:, :5].astype(np.float64), [[i] for i in range(len(found))])
