"""Which detector runs on which frame within the budget, and the per-class coverage it vouches for.

The stage's face path runs on every frame. The detectors for the other classes of the policy —
`text` (PP-OCR det; the recogniser reads only the lines a form's `match` needs, at most
`text_reads_per_pass` per pass, `text_reads_when_covered` when the policy's `text` rule hides them), `person` (SSDLite)
and `screen` (bright rectangles with text, from the text pass) — are costlier and change slowly, so
they run every `text_every` / `person_every` frames, staggered so that they rarely share a frame.
Between passes, their boxes are *held*: moved with the camera (global shift by phase correlation of
a small grey copy, ~0.3 ms) and grown by `margin_growth` per frame since their pass, as face tracks
are. Rule-defined forms (redact/forms.py) are evaluated on their source detector's pass. Half-way
between text passes an edge pass looks at the strips that came into view since the last one (text
entering the frame; `_edge_pass`): its boxes join the holds, unread (private), and vouch for no class.

Per class, a frame's coverage is `detected` (its detector ran on this frame), `held` (it ran at most
`limit` frames ago: `max(every + 1, hold_frames)`) or nothing: then the frame is withheld
(`no_coverage`, fail closed). A pass that does not fit in what is left of the frame's budget is
deferred (counted) while its class is still held; a pass stopped at the deadline counts the same.
A pass that restores a lapsed class (the first one, or after a stall) gets a time limit of its own
(`max(budget_ms, 1 s)`): that frame is late once rather than withheld on every try under load.
The manifest gets `classes` (coverage and age per class) and `detector_ms_by` (ms per detector).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np

from capture.frame import FrameWithheld, RGBDFrame
from redact import segment
from redact.cards import CardError
from redact.config import RedactConfig
from redact.form_models import Models
from redact.forms import DETECTORS, Form, Found, evaluate, needed, root
from redact.hold import Exposed, Hold, edges
from redact.motion import Motion
from redact.nms import iou_matrix
from redact.policy import Policy
from redact.proof import PassCanary
from redact.runtime import ModelLoadError, ModelRunError
from redact.screens import find_screens

log = logging.getLogger("crowdcap.redact")

TEXT_REUSE_IOU = 0.6  # a text line this close to one read on the last pass keeps its string
EDGE_MARGIN = 32  # px an edge pass's strip reaches into what the last whole pass saw (lines it cuts)
CATCH_UP_MS = 1000.0  # at least this for a pass restoring lapsed coverage (start, after a stall)


def bodies(faces: np.ndarray, width: int, height: int) -> np.ndarray:
    """Body boxes N×5 extrapolated from face regions: 1.6 face widths either side, 6 face heights down."""
    w = faces[:, 2] - faces[:, 0]
    h = faces[:, 3] - faces[:, 1]
    cx = (faces[:, 0] + faces[:, 2]) / 2
    out = np.stack([np.clip(cx - 1.6 * w, 0, width), faces[:, 1], np.clip(cx + 1.6 * w, 0, width),
                    np.clip(faces[:, 3] + 6 * h, 0, height), np.full(len(faces), 0.5)], axis=1)
    return out


def text_scale(width: int, height: int, cfg: RedactConfig) -> float:
    """The text detector's resize of a frame: down to fit text_width × text_height; a small image (short
    side < text_min_side) up towards text_min_side within them. DB was trained on upscaled images: at
    their native size small photos of handwriting or signs give a probability map of zero (skimage's
    `text`: nothing at 1×, lines found from 2.5×)."""
    fit = min(cfg.text_width / width, cfg.text_height / height)
    want = max(1.0, cfg.text_min_side / max(min(width, height), 1))
    return min(fit, want)


def text_rule_covers(policy: Policy, forms: list[Form]) -> bool:
    """Whether the policy's `text` rule already hides every line its `match` forms could keep, as
    strongly (action, colour/depth, score): reading a line then changes only its label, not a pixel."""
    from redact.floor import ACTION_STRENGTH
    text = policy.rule_for("text")
    if text is None or text.action not in ACTION_STRENGTH:
        return False
    for f in forms:
        rule = policy.rule_for(f.class_name)
        if f.match is None or rule is None:
            continue
        if (rule.action not in ACTION_STRENGTH or ACTION_STRENGTH[rule.action] > ACTION_STRENGTH[text.action]
                or (rule.color and not text.color) or (rule.depth and not text.depth)
                or rule.min_score < text.min_score):
            return False
    return True


class FormSchedule:
    def __init__(self, cfg: RedactConfig, policy: Policy, own_classes: list[str], models: Models | None = None) -> None:
        self.cfg = cfg
        self.models = models or Models(cfg)
        by_name = {f.name: f for f in policy.forms}
        wanted = [r.cls for r in policy.rules if r.cls not in own_classes]
        self.order: list[Form]
        self.order, self.detectors = needed(by_name, wanted)
        known = {f.class_name for f in self.order} | set(DETECTORS)
        self.classes = [c for c in wanted if c in known]
        # class name (detector, "custom:NAME" or "plate") → the detector its boxes come from
        self.roots = {d: d for d in DETECTORS} | {f.class_name: root(f, by_name) for f in self.order}
        self.every = {"text": cfg.text_every, "person": cfg.person_every, "screen": cfg.text_every}
        # One frame beyond the rate at least: two passes due on one frame (text every 12, persons every
        # 15: every 60th frame) spread over two frames rather than one frame carrying both.
        self.limit = {d: max(self.every[d] + 1, cfg.hold_frames) for d in self.every}
        self.error = ""
        try:
            for d in sorted(self.detectors - {"screen"}):
                self.models.get(d)
            if any(f.match is not None for f in self.order):
                self.models.get("rec")
        except (CardError, ModelLoadError) as e:
            self.error = str(e)
            log.error("redaction model for %s not loaded, frames will be withheld: %s", ", ".join(self.classes), e)
        self.age = {d: 1 << 30 for d in self.every}  # frames since the detector's last pass
        self.holds: dict[str, Hold] = {}
        self._texts: tuple[np.ndarray, list[str | None]] = (np.zeros((0, 4)), [])  # last pass's read lines
        self._motion_est = Motion()
        self._exposed = Exposed()  # what came into view since the text detector's last whole pass
        self._pass_texts: dict[int, str | None] = {}
        self._reads_left = 0  # of text_reads_per_pass, on the current pass
        # Under a `text` rule that hides every line anyway, reads only label regions: one line per pass.
        self._reads_per_pass = min(cfg.text_reads_per_pass, cfg.text_reads_when_covered) if text_rule_covers(
            policy, self.order) else cfg.text_reads_per_pass
        self._lines_read = 0  # text lines the recogniser read (each once while it stays in view)
        self._lock = threading.Lock()
        self._coverage: dict[str, Counter[str]] = {c: Counter() for c in self.classes}
        self._ms: Counter[str] = Counter()
        self._cpu: Counter[str] = Counter()  # CPU-ms of the detector passes (this thread; canary included)
        self._passes: Counter[str] = Counter()
        self._deferred: Counter[str] = Counter()
        self._frames = 0
        self._by_class: Counter[str] = Counter()  # regions redacted, per class (faces included)
        self.canary = PassCanary(cfg.forms_canary_every)
        segment.configure(cfg)  # person masks (policy rules with shape = "mask"): the [redact] mask_* settings

    def reset(self) -> None:
        """Forget held boxes and passes (unrelated stills follow): the next frame runs every detector."""
        self.holds.clear()
        self.age = {d: 1 << 30 for d in self.every}
        self._motion_est.reset()
        self._exposed.reset()
        self._texts = (np.zeros((0, 4)), [])

    def provides(self, cls: str) -> bool:
        return cls in self.classes and not self.error

    # -- per frame --------------------------------------------------------------------------------
    def step(self, frame: RGBDFrame, policy: Policy, regions: list[dict[str, Any]], t0: float,
             face_ms: float) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
        """(all regions, detector ms, manifest additions) for a frame whose face regions are given."""
        face_classes = sorted({r["class"] for r in regions} | {r.cls for r in policy.rules if r.cls not in self.classes})
        extra: dict[str, Any] = {"classes": {c: {"coverage": "detected", "age": 0} for c in face_classes},
                                 "detector_ms_by": {"face": round(face_ms, 2)}}
        if not self.classes:
            with self._lock:
                self._by_class.update(r["class"] for r in regions)
            return regions, face_ms, extra
        width, height = frame.size
        dx, dy = self._motion(frame.color)
        self._exposed.step(dx, dy)
        for d in self.age:
            self.age[d] += 1
        for name, hold in self.holds.items():
            hold.step(dx, dy, self.limit[self.roots[name]], width, height)
        self._texts[0][:, 0::2] += dx  # lines read on the last pass move with the camera too
        self._texts[0][:, 1::2] += dy
        ms: dict[str, float] = {}
        faces = np.array([r["bbox"] for r in regions if r["class"] == "face"], np.float64).reshape(-1, 4)
        ran = self._run_due(frame.color, t0, ms, faces)
        coverage = {}
        for c in self.classes:
            age = self.age[self.roots[c]]
            if age > self.limit[self.roots[c]]:
                with self._lock:
                    self._coverage[c]["none"] += 1
                raise FrameWithheld("no_coverage", f"{c}: no {self.roots[c]} detector pass for {age} frames "
                                                   f"(limit {self.limit[self.roots[c]]}); the frame budget is too small")
            coverage[c] = {"coverage": "detected" if age == 0 else "held", "age": int(age)}
        out = list(regions)
        for c in self.classes:
            rule = policy.rule_for(c)
            hold = self.holds.get(c) or Hold()
            b, age = hold.boxes, hold.age
            if c == "person" and len(faces) and self.cfg.person_from_faces:
                # A detected face implies a body below it, on every frame: the person model (300×300,
                # every few frames) misses or cuts short people whose faces the face path finds.
                b = np.concatenate([b, bodies(faces, width, height)])
                age = np.concatenate([age, np.zeros(len(faces), np.int64)])
            if rule is None or not len(b):
                continue
            ok = b[:, 4] >= rule.min_score
            wh = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
            pad = wh * (rule.margin + self.cfg.margin_growth * age)[:, None]
            box = np.concatenate([np.floor(b[:, :2] - pad), np.ceil(b[:, 2:4] + pad)], 1)
            box[:, 0::2] = np.clip(box[:, 0::2], 0, width)
            box[:, 1::2] = np.clip(box[:, 1::2], 0, height)
            for i in np.nonzero(ok & (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1]))[0]:
                out.append({"bbox": [int(v) for v in box[i]], "class": c, "score": round(float(b[i, 4]), 4),
                            "action": rule.action, "applies_to": rule.applies_to,
                            "source": "detected" if age[i] == 0 else "propagated"})
        extra["classes"].update(coverage)
        extra["detector_ms_by"].update({k: round(v, 2) for k, v in ms.items()})
        with self._lock:
            self._frames += 1
            for c, v in coverage.items():
                self._coverage[c][v["coverage"]] += 1
            self._ms.update(ms)
            self._passes.update(ran)
            self._by_class.update(r["class"] for r in out)
        return out, face_ms + sum(ms.values()), extra

    def _motion(self, color: np.ndarray) -> tuple[float, float]:
        """The camera's image shift since the last frame (pixels), from a small grey copy (redact/motion.py)."""
        return self._motion_est.step(color, measure=bool(self.holds))

    def _run_due(self, color: np.ndarray, t0: float, ms: dict[str, float], faces: np.ndarray) -> list[str]:
        from redact.detector import Deadline

        due = [d for d in ("text", "person") if d in self.detectors and self.age[d] >= self.every[d]]
        due.sort(key=lambda d: self.age[d] - self.every[d], reverse=True)  # the most overdue first
        ran: list[str] = []
        fresh: dict[str, Found] = {}
        for d in due:
            left_ms = self.cfg.budget_ms - (time.perf_counter() - t0) * 1000.0
            estimate = self._ms[d] / max(self._passes[d], 1) if self._passes[d] else 0.0
            # Still covered by holding: leave it for a frame with time left, or (one frame late at
            # most) for a frame without another pass, so that passes spread over frames.
            spread = bool(ran) and self.every[d] > 1 and self.age[d] == self.every[d]
            if self.age[d] < self.limit[d] and (estimate > left_ms or spread):
                self._deferred[d] += 1
                continue
            t, cpu = time.perf_counter(), time.thread_time()
            try:
                # A pass that restores lapsed coverage (at start, after a stall) gets a time limit of its
                # own: the frame is late once rather than withheld on every try under load.
                allowed = max(self.cfg.budget_ms, CATCH_UP_MS) if self.age[d] > self.limit[d] else left_ms
                with Deadline(max(allowed, 1.0) / 1000.0) as deadline:
                    fresh[d] = self._detect(d, color, deadline.options, fresh, ms)
                    if self.canary.due(d, fresh[d].boxes):  # the model must still see its known patch (redact/proof.py)
                        self.canary.check(d, self.models.get(d), deadline.options)
            except FrameWithheld:
                # Its boxes of this pass are not trusted and its coverage lapses: the next frame runs a
                # catch-up pass and the canary again; frames are withheld until the canary is found.
                self.age[d] = 1 << 30
                if d == "text":
                    self.age["screen"] = 1 << 30
                raise
            except ModelRunError as e:
                if e.reason != "model_timeout" or self.age[d] > self.limit[d]:
                    raise
                self._deferred[d] += 1
                continue
            ms[d] = (time.perf_counter() - t) * 1000.0
            with self._lock:
                self._cpu[d] += (time.thread_time() - cpu) * 1000.0
            ran.append(d)
            self.age[d] = 0
            if d == "text":
                self.age["screen"] = 0
                self._exposed.reset()
        if fresh:
            left_ms = self.cfg.budget_ms - (time.perf_counter() - t0) * 1000.0
            with Deadline(max(left_ms, 1.0) / 1000.0) as deadline:  # lines not read in time count as matches
                self._evaluate(color, fresh, ms, deadline.options, faces)
        if (self.cfg.text_edge_pass and "text" in self.detectors and "text" not in fresh and self.every["text"] >= 4
                and self.age["text"] == self.every["text"] // 2):
            self._edge_pass(color, t0, ms, faces)
        return ran

    def _edge_pass(self, color: np.ndarray, t0: float, ms: dict[str, float], faces: np.ndarray) -> None:
        """Half-way between whole text passes: the text detector on the strips that came into view
        since the last one (the camera's shift, redact/hold.py `Exposed`), so that text entering the
        frame (a plate as the wearer turns) waits half the interval. Its lines and the text forms made
        of them join the holds (nothing held is replaced: the strip saw part of the frame); they are not
        read — a form's `match` counts them as matches (private) until a whole pass reads them.
        Coverage still comes from the whole passes (a strip vouches for no class)."""
        from redact.detector import Deadline, Pass

        h, w = color.shape[:2]
        strips = self._exposed.strips(w, h, EDGE_MARGIN)
        if not strips:
            return
        left_ms = self.cfg.budget_ms - (time.perf_counter() - t0) * 1000.0
        t, cpu = time.perf_counter(), time.thread_time()
        det, scale = self.models.get("text"), text_scale(w, h, self.cfg)
        try:
            with Deadline(max(left_ms, 1.0) / 1000.0) as deadline:
                found = [det.run(color, Pass(x, y, sw, sh, scale), deadline.options) for x, y, sw, sh in strips]
        except ModelRunError as e:
            if e.reason != "model_timeout":
                raise
            self._deferred["text_edge"] += 1
            return
        boxes = np.concatenate(found)[:, :5].astype(np.float64)
        fresh = {"text": Found(boxes, [[i] for i in range(len(boxes))])}
        order = [f for f in self.order if self.roots[f.class_name] == "text"]
        results = evaluate(order, self._base(color, fresh, faces), lambda idx: {})
        for f in order:
            fresh[f.class_name] = results[f.name]
        for name, found_ in fresh.items():
            self.holds.setdefault(name, Hold()).refresh(found_.boxes, w, h, add_only=True)
        ms["text_edge"] = (time.perf_counter() - t) * 1000.0
        with self._lock:
            self._cpu["text_edge"] += (time.thread_time() - cpu) * 1000.0
            self._passes["text_edge"] += 1

    def _base(self, color: np.ndarray, fresh: dict[str, Found], faces: np.ndarray) -> dict[str, Found]:
        """Each detector's boxes for the forms: fresh where it ran, else what is held (persons: and a
        body below every detected face, for `inside = "person"`: the person model misses some)."""
        base: dict[str, Found] = {}
        for name in DETECTORS:
            held = self.holds.get(name)
            base[name] = fresh.get(name) or Found(held.boxes.copy() if held else np.zeros((0, 5)), [])
        if len(faces):
            base["person"] = Found(np.concatenate([base["person"].boxes, bodies(faces, *color.shape[1::-1])]))
        return base

    def _detect(self, d: str, color: np.ndarray, run_options: Any, fresh: dict[str, Found],
                ms: dict[str, float]) -> Found:
        det = self.models.get(d)
        h, w = color.shape[:2]
        size = (self.cfg.text_width, self.cfg.text_height) if d == "text" else (w, h)
        whole, _ = det.plan(w, h, size, (0, 0))
        if d == "text":
            whole = replace(whole, scale=text_scale(w, h, self.cfg))
        found = det.run(color, whole, run_options)
        return Found(found[:, :5].astype(np.float64), [[i] for i in range(len(found))])

    def _evaluate(self, color: np.ndarray, fresh: dict[str, Found], ms: dict[str, float], run_options: Any,
                  faces: np.ndarray) -> None:
        """Forms and screens from this frame's passes; their holds refreshed."""
        base = self._base(color, fresh, faces)
        if "text" in fresh and "screen" in self.detectors:
            t = time.perf_counter()
            base["screen"] = fresh["screen"] = Found(find_screens(color, fresh["text"].boxes))
            ms["screen"] = (time.perf_counter() - t) * 1000.0
        order = [f for f in self.order if self.roots[f.class_name] in fresh]
        if order:
            text = fresh.get("text", Found())
            t = time.perf_counter()
            self._pass_texts = {}
            self._reads_left = self._reads_per_pass  # for the whole pass, all forms together
            results = evaluate(order, base, lambda idx: self._read(color, text.boxes, idx, run_options))
            ms["rec"] = (time.perf_counter() - t) * 1000.0
            if "text" in fresh:  # every line read or reused on this pass, by any form
                keys = sorted(self._pass_texts)
                self._texts = (text.boxes[keys, :4].copy(), [self._pass_texts[i] for i in keys])
            self._pass_texts = {}
            for f in order:
                fresh[f.class_name] = results[f.name]
        for name, found in fresh.items():
            self.holds.setdefault(name, Hold()).refresh(found.boxes, *color.shape[1::-1])

    def _read(self, color: np.ndarray, boxes: np.ndarray, idx: list[int],
              run_options: Any) -> dict[int, str | None]:
        """Strings of text lines `idx` (reused from the last pass where the same line was read)."""
        old_boxes, old_texts = self._texts
        out: dict[int, str | None] = {}
        todo = []
        if len(old_boxes):
            iou = iou_matrix(boxes[idx, :4], old_boxes)
        h, w = color.shape[:2]
        for k, i in enumerate(idx):
            if edges(boxes[i:i + 1], w, h, within=2.0).any():
                out[i] = None  # cut by the frame's edge: what is read is a fragment, it proves nothing
            elif len(old_boxes) and iou[k].max() >= TEXT_REUSE_IOU:
                out[i] = old_texts[int(iou[k].argmax())]
            else:
                todo.append(i)
        # At most text_reads_per_pass new lines per pass (the largest first), so that no frame carries
        # a long recogniser run on top of the detector; the others, and all of them when the frame's
        # deadline stops the run, are not read yet — forms treat them as matches (private).
        todo = sorted(todo, key=lambda i: -(boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1]))
        todo = todo[:self._reads_left]
        self._reads_left -= len(todo)
        if todo:
            rec = self.models.get("rec")
            try:
                read = rec.read(color, boxes[todo], run_options)
            except ModelRunError as e:
                if e.reason != "model_timeout":
                    raise
                read = []
                self._deferred["rec"] += 1
            self._lines_read += len(read)
            for i, (s, conf) in zip(todo, read, strict=False):
                # Unreadable (a far plate, a blurred bib): unknown, so a match — private, as a line not read yet.
                out[i] = s if conf >= rec.threshold else None
        self._pass_texts.update(out)  # kept for the next pass (memory only; never logged or sent)
        return out

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            n = max(self._frames, 1)
            return {"regions_by_class": dict(self._by_class), "forms": {
                "classes": {c: dict(v) for c, v in self._coverage.items()},
                "detector_ms_per_frame": {k: round(v / n, 2) for k, v in self._ms.items()},
                "cpu_ms_per_pass": {k: round(v / max(self._passes[k], 1), 2) for k, v in self._cpu.items()},
                "passes": dict(self._passes), "deferred": dict(self._deferred), "lines_read": self._lines_read,
                "reads_per_pass": self._reads_per_pass,
                "every": {d: self.every[d] for d in self.detectors if d in self.every},
                "models": self.models.ids(), "load_error": self.error, "canary": self.canary.status()}}
