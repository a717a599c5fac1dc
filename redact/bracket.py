"""The face bracket: full face detection on key frames only; the frames between wait and are covered from both sides.

`RedactStage.push(frame)` takes a stream's frames one at a time and returns those it releases, in
order (possibly none): each as a redacted `RGBDFrame`, or as the `FrameWithheld` that stood for it —
exactly one item per pushed frame, in push order, over push + flush. `flush()` ends the stream: the
last waiting frame becomes a key frame and everything is released. Raw frames wait here, in memory,
inside the redaction stage; they never leave it unredacted. (The bracket itself releases each frame as
a `Covered` — faces known — and the stage runs the finish part on it: at once, or with
`split_threads` in the next pipeline thread: redact/split.py.)

Every `face_every`-th frame (and a stream's first) is a **key frame**: the stage's full face detection
(whole frame, re-checks, tiles, the verify model's schedule, the canary) runs on it. A frame between two
key frames waits until the next key frame has been detected (at most `face_every - 1` frames; the
pipeline also flushes a stream that stalls; and no frame waits for a key frame captured
`face_max_wait_ms` or more after it — under overload the key frame comes earlier), then is redacted with the union of
  * the **forward hold**: the tracker's tracks from the key frame before, stepped over this frame
    with no detection (velocity, margin growing `margin_growth` per frame: today's hold), source
    `propagated`; and
  * the **backward projection** of the key frame after: every face track it confirmed, moved back by
    the camera's image shift accumulated between the two frames (phase correlation of a small grey
    copy, redact/motion.py), and — for a track confirmed on both key frames — also by its own motion
    (linear between its two confirmations); the hull of both, grown by the rule's margin plus
    `margin_growth` per frame of distance, source `projected`.
So a face that pops in between key frames is covered from the first frame it is in, retroactively.
What neither side sees — a face that comes *and goes* between two key frames — is what the cheap
pass on the frames between (`face_between_width/height`, whole frame downscaled, fed to the tracker;
on every `face_between_every`-th frame after a key frame, and what it finds is also moved back to the
waiting frames before it: with 2, any face in view for 2 frames is seen by a pass or a key frame) is
for. Measured (`python -m bench redact`, 2026-12-03, one run, load ~3-8 on 2 cores; set
`astronaut_flash_2frames`: a 48-96 px face in view for 2 frames at a time): recall 0.75 at face_every 3
and 0.625 at 4 without the pass (every other set unchanged), 1.0 with it at 256×192 or 320×256, for
~0.6 CPU-ms/frame at 4 (23.2 vs 22.7; RetinaFace at 256×192 ≈ 5 ms, one pass per 4 frames). So the
default runs it (256×192, every 2nd frame); `face_between_width = 0` turns it off.
Latency: a frame waits for up to face_every - 1 later frames plus the key frame's detection; under
overload a key frame's timeout withholds its whole bracket (bench e2e, load ~2-3, nothing keeps up:
capture→spool p50/p99 559/935 ms at 4 vs 246/471 ms at 1; 36 vs 6 frames withheld by timeouts).
Face tracks are held `hold_frames + face_every - 1` frames (redact/stage.py): confirmed on key frames
only, they survive as many missed detections as at face_every = 1 (without it the crowd set lost
recall at 4: 0.9905 vs the old path's 0.9913; with it 0.9942).

Fail closed: if the key frame's detection fails (timeout, model fault, canary miss, garbage), every
frame waiting on it is withheld (or obscured under `on_fault = "obscure"`) with that reason, counted
per frame as a single frame's fault is, and under `withheld_by_bracket`. A frame whose between pass
failed is withheld with its own reason. The non-face forms (text, plates, persons: FormSchedule), the
policy's drop and the wearer's private layer run per frame when it is released, in frame order.

Manifests: key frames as `apply` (`passes`); a bracketed frame has `coverage: "bracketed"`,
`bracket: {"key_before": seq | null, "key_after": seq}` (key_before: the last key frame whose
detection succeeded), `passes` (`{}`, or the between pass), face classes `{"coverage": "bracketed",
"age": frames since key_before}`, and regions with source `propagated` / `projected` / `detected`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from capture.frame import FrameWithheld, RGBDFrame
from redact.motion import Motion
from redact.split import Covered

if TYPE_CHECKING:
    from redact.policy import Policy
    from redact.stage import RedactStage

Released = Covered | RGBDFrame | FrameWithheld  # Covered: faces known, the finish part to run (redact/split.py)


@dataclass
class Waiting:
    """A frame waiting for the next key frame."""

    frame: RGBDFrame
    offset: np.ndarray  # the camera's accumulated image shift at this frame (x, y), since the stream began
    dets: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))  # the between pass's, if it ran
    passes: dict[str, Any] = field(default_factory=dict)
    fault: FrameWithheld | None = None  # its between pass failed


class Bracket:
    """Buffers the frames between key frames of one stream and covers them once the next key frame is detected."""

    def __init__(self, stage: RedactStage, every: int) -> None:
        self.stage = stage
        self.every = max(1, int(every))
        self.motion = Motion()
        self.waiting: list[Waiting] = []
        self._offset = np.zeros(2)
        self._key_seq: int | None = None  # the last key frame whose detection succeeded
        self._started = False
        self.counts: Counter[str] = Counter()  # key, bracketed, between_passes
        self.withheld: Counter[str] = Counter()  # frames withheld because their key frame failed, by reason
        self.max_wait_frames = 0

    def reset(self) -> None:
        """A new, unrelated stream follows (nothing may be waiting: flush first)."""
        if self.waiting:
            raise RuntimeError(f"bracket reset with {len(self.waiting)} frames waiting: flush() them first")
        self.motion.reset()
        self._offset = np.zeros(2)
        self._key_seq = None
        self._started = False

    # -- the stream ------------------------------------------------------------------------------
    def shift(self, frame: RGBDFrame) -> tuple[float, float] | None:
        """The camera's image shift since the previous frame, for `push` (None at face_every 1: not
        needed here). Measured once per frame: the forms schedule's holds use it too."""
        return self.motion.step(frame.color) if self.every > 1 else None

    def keys(self, frame: RGBDFrame) -> bool:
        """Whether `push(frame)` will make it a key frame by count (the stream's first, or face_every − 1
        frames waiting; face_every 1: never — every frame is one, none waits). A key frame by time is
        not foreseen."""
        return self.every > 1 and (not self._started or len(self.waiting) >= self.every - 1)

    def push(self, frame: RGBDFrame, shift: tuple[float, float] | None = None) -> list[Released]:
        if self.every > 1:  # the shift of every frame against the one before: the projection sums it
            self._offset = self._offset + (self.motion.step(frame.color) if shift is None else shift)
        if not self._started or len(self.waiting) >= self.every - 1 or self._waited_too_long(frame):
            self._started = True
            return self._key(frame)
        w = Waiting(frame, self._offset.copy())
        cfg = self.stage.cfg
        # Every face_between_every-th frame after the key frame: with 2, a face in view for 2 frames
        # (one of which is not a key frame) is on a pass's frame.
        if cfg.face_between_width and cfg.face_between_height and (len(self.waiting) + 1) % cfg.face_between_every == 0:
            try:
                w.dets, w.passes = self.stage.between_pass(frame, self.stage.policy)
                self.counts["between_passes"] += 1
            except FrameWithheld as e:
                w.fault = e
        self.waiting.append(w)
        self.max_wait_frames = max(self.max_wait_frames, len(self.waiting))
        return []

    def _waited_too_long(self, frame: RGBDFrame) -> bool:
        """The oldest waiting frame was captured `face_max_wait_ms` or more before this one (frames dropped
        before redaction, a slow stream): this one is the key frame, so no frame waits longer."""
        limit_ms = self.stage.cfg.face_max_wait_ms
        if not self.waiting or not limit_ms:
            return False
        waited_ms = (frame.t_mono_ns - self.waiting[0].frame.t_mono_ns) / 1e6
        if waited_ms >= limit_ms:
            self.counts["key_by_time"] += 1
            return True
        return False

    def flush(self) -> list[Released]:
        if not self.waiting:
            return []
        last = self.waiting.pop()  # its between pass (if any) is superseded by the full detection
        self._started = True
        return self._key(last.frame)

    # -- a key frame: detect, then release what waited on it --------------------------------------
    def _key(self, frame: RGBDFrame) -> list[Released]:
        waiting, self.waiting = self.waiting, []
        try:
            return self._resolve(frame, waiting)
        except Exception as e:  # a bug here must not lose the frames it held: each withheld, counted
            fault = FrameWithheld("bracket_error", f"{type(e).__name__}: {e}")
            with self.stage._lock:
                self.withheld[fault.reason] += len(waiting)
            return [self._withhold(f, self.stage.policy, fault) for f in [w.frame for w in waiting] + [frame]]

    def _resolve(self, frame: RGBDFrame, waiting: list[Waiting]) -> list[Released]:
        # One thread (the face part's): the tracker steps here only (redact/split.py).
        stage, policy = self.stage, self.stage.policy
        width, height = frame.size
        held = []
        for w in waiting:  # the forward hold: the tracker steps over each waiting frame, in order
            d = w.dets if w.fault is None else np.zeros((0, 6))
            stage.tracker.update(d[:, :4].astype(np.float64), d[:, 4].astype(np.float64), d[:, 5].astype(np.int64))
            held.append(stage.track_regions(policy, width, height))
        tr = stage.tracker
        before = {int(i): (tr.anchor[k].copy(), int(tr.age[k]) + 1) for k, i in enumerate(tr.ids)}
        t0 = time.perf_counter()
        try:
            regions, detector_ms = stage.detect_key(frame, policy, t0, len(waiting) + 1)
        except FrameWithheld as e:
            return self._failed(frame, policy, waiting, e)
        key_passes = stage.last_passes
        out: list[Released] = []
        for i, w in enumerate(waiting):
            distance = len(waiting) - i  # frames from this one to the key frame
            if w.fault is not None:
                out.append(self._withhold(w.frame, policy, w.fault))
                continue
            projected = (self._project(policy, before, self._offset - w.offset, distance, width, height)
                         + self._between_back(policy, waiting, i, width, height))
            extra = {"coverage": "bracketed", "passes": w.passes,
                     "bracket": {"key_before": self._key_seq, "key_after": frame.seq}}
            out.append(self._release(w.frame, policy, held[i] + projected, extra, i + 1))
        self.counts["bracketed"] += len(waiting)
        self.counts["key"] += 1
        self._key_seq = frame.seq
        # The key frame's forms get what is left of its budget after its face detection.
        out.append(Covered(frame, policy, regions, detector_ms, detector_ms, {"passes": key_passes}))
        return out

    def _project(self, policy: Policy, before: dict[int, tuple[np.ndarray, int]], shift: np.ndarray,
                 distance: int, width: int, height: int) -> list[dict[str, Any]]:
        """The key frame's fresh tracks moved back `distance` frames (camera `shift` since that frame)."""
        tr = self.stage.tracker
        fresh = np.nonzero(tr.age == 0)[0]
        own = []
        for k in fresh:  # a track confirmed before too: its own motion, linear between the confirmations
            prior = before.get(int(tr.ids[k]))
            if prior is not None and distance < prior[1]:
                anchor, age = prior
                own.append(anchor + (tr.boxes[k] - anchor) * (age - distance) / age)
            else:
                own.append(None)
        return self._moved_back(policy, tr.boxes[fresh], tr.cls[fresh], tr.score[fresh], own, shift, distance,
                                width, height)

    def _moved_back(self, policy: Policy, boxes: np.ndarray, cls: np.ndarray, scores: np.ndarray,
                    own: list[np.ndarray | None], shift: np.ndarray, distance: int, width: int,
                    height: int) -> list[dict[str, Any]]:
        """Boxes seen `distance` frames later moved back by the camera's `shift` (∪ their own motion
        where known), grown by the rule's margin plus margin_growth per frame of distance."""
        stage = self.stage
        out = []
        for b, c, score, o in zip(boxes, cls, scores, own, strict=True):
            rule = stage.rule_of_class(policy, c)
            if rule is None:
                continue
            box = b - np.array([shift[0], shift[1], shift[0], shift[1]])  # where the camera's motion puts it
            if o is not None:
                box = np.concatenate([np.minimum(box[:2], o[:2]), np.maximum(box[2:], o[2:])])
            wh = np.array([b[2] - b[0], b[3] - b[1]])
            pad = wh * (rule.margin + stage.cfg.margin_growth * distance)
            x1, y1 = np.floor(box[:2] - pad)
            x2, y2 = np.ceil(box[2:] + pad)
            x1, x2 = np.clip([x1, x2], 0, width)
            y1, y2 = np.clip([y1, y2], 0, height)
            if x2 > x1 and y2 > y1:
                out.append({"bbox": [int(x1), int(y1), int(x2), int(y2)], "class": rule.cls,
                            "score": round(float(score), 4), "action": rule.action,
                            "applies_to": rule.applies_to, "source": "projected"})
        return out

    def _between_back(self, policy: Policy, waiting: list[Waiting], i: int, width: int,
                      height: int) -> list[dict[str, Any]]:
        """What the between passes of later waiting frames found, moved back to waiting frame i (a face
        first seen by the pass on the frame after its first frame)."""
        out = []
        for m in range(i + 1, len(waiting)):
            later = waiting[m]
            if later.fault is None and len(later.dets):
                d = later.dets
                out += self._moved_back(policy, d[:, :4].astype(np.float64), d[:, 5].astype(np.int64), d[:, 4],
                                        [None] * len(d), later.offset - waiting[i].offset, m - i, width, height)
        return out

    def _release(self, frame: RGBDFrame, policy: Policy, regions: list[dict[str, Any]], extra: dict[str, Any],
                 age: int) -> Released:
        """Its faces covered; the rest (forms, private layer, paint, manifest) is the finish part's."""
        return Covered(frame, policy, regions, 0.0, 0.0, extra, age_tracks=False, timed=False, bracket_age=age)

    def _withhold(self, frame: RGBDFrame, policy: Policy, e: FrameWithheld, age_tracks: bool = False) -> Released:
        """Withheld (the exception, counted by the stage) or obscured, as a single frame's fault is."""
        try:
            return self.stage._fault(frame, policy, e, age_tracks)
        except FrameWithheld as raised:
            return raised

    def _failed(self, key: RGBDFrame, policy: Policy, waiting: list[Waiting], e: FrameWithheld) -> list[Released]:
        """The key frame's detection failed: nothing vouches for the frames waiting on it either."""
        out = [self._withhold(w.frame, policy, w.fault or e) for w in waiting]
        with self.stage._lock:
            self.withheld[e.reason] += sum(1 for w in waiting if w.fault is None)
        out.append(self._withhold(key, policy, e, age_tracks=True))  # the tracks step over the key frame
        return out

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"face_every": self.every, "frames_key": self.counts["key"],
                "frames_bracketed": self.counts["bracketed"], "key_by_time": self.counts["key_by_time"],
                "between_passes": self.counts["between_passes"],
                "waiting": len(self.waiting), "max_wait_frames": self.max_wait_frames,
                "withheld_by_bracket": dict(self.withheld)}
