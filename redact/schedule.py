"""Which detector runs on which frame within the budget, and the per-class coverage it vouches for.

The stage's face path runs on every frame. The detectors for the other classes of the policy —
`text` (PP-OCR det; the recogniser reads only the lines a form's `match` needs, at most
`text_reads_per_pass` per pass, `text_reads_when_covered` when the policy's `text` rule hides them), `person` (SSDLite)
and `screen` (bright rectangles with text, from the text pass) — are costlier and change slowly, so
they run every `text_every` / `person_every` frames, staggered so that they rarely share a frame.
Between passes, their boxes are *held*: moved with the camera (global shift by phase correlation of
a small grey copy, ~0.3 ms; the face bracket's own estimate when it made one) and grown by
`margin_growth` per frame since their pass, as face tracks are. Rule-defined forms (redact/forms.py)
are evaluated on their source detector's pass. Half-way between text passes an edge pass looks at the
strips that came into view since the last one (text entering the frame): its boxes join the holds,
unread (private), and vouch for no class.

Two halves: the passes (redact/passes.py: which detector is due, the runs, canary, screens, edge
strips; no faces needed — with split threads they run ahead, in the "redact-forms" worker, while the
frame waits for its face bracket: redact/ahead.py) and `step` here (faces known: holds, forms, reads,
coverage, regions), each seeing the frames in order.

Per class, a frame's coverage is `detected` (its detector ran on this frame), `held` (a pass this step
absorbed ran at most `limit` frames ago: `max(every + 1, hold_frames)`) or nothing: then the frame is
withheld (`no_coverage`, fail closed). A pass that does not fit in what is left of the frame's budget is
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
from typing import Any

import numpy as np

from capture.frame import FrameWithheld, RGBDFrame
from redact import segment
from redact.cards import CardError
from redact.config import RedactConfig
from redact.detector import Deadline
from redact.form_models import Models
from redact.forms import DETECTORS, Form, Found, evaluate, needed, root
from redact.hold import Hold, edges
from redact.nms import iou_matrix
from redact.passes import NEVER, Looked, Passes
from redact.policy import Policy
from redact.runtime import ModelLoadError, ModelRunError

log = logging.getLogger("crowdcap.redact")

TEXT_REUSE_IOU = 0.6  # a text line this close to one read on the last pass keeps its string


def bodies(faces: np.ndarray, width: int, height: int) -> np.ndarray:
    """Body boxes N×5 extrapolated from face regions: 1.6 face widths either side, 6 face heights down."""
    w = faces[:, 2] - faces[:, 0]
    h = faces[:, 3] - faces[:, 1]
    cx = (faces[:, 0] + faces[:, 2]) / 2
    out = np.stack([np.clip(cx - 1.6 * w, 0, width), faces[:, 1], np.clip(cx + 1.6 * w, 0, width),
                    np.clip(faces[:, 3] + 6 * h, 0, height), np.full(len(faces), 0.5)], axis=1)
    return out


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
        self.passes = Passes(cfg, self.models, self.detectors)  # the first half (redact/passes.py)
        self.every, self.limit = self.passes.every, self.passes.limit
        self.error = ""
        try:
            for d in sorted(self.detectors - {"screen"}):
                self.models.get(d)
            if any(f.match is not None for f in self.order):
                self.models.get("rec")
        except (CardError, ModelLoadError) as e:
            self.error = str(e)
            log.error("redaction model for %s not loaded, frames will be withheld: %s", ", ".join(self.classes), e)
        self.holds: dict[str, Hold] = {}
        self._pass_n = {d: -NEVER for d in self.every}  # the frame number of each detector's last absorbed pass
        self._n = 0  # the last frame number this half stepped
        self._offset = np.zeros(2)  # the camera's summed shift at that frame
        self._texts: tuple[np.ndarray, list[str | None]] = (np.zeros((0, 4)), [])  # last pass's read lines
        self._pass_texts: dict[int, str | None] = {}
        self._reads_left = 0  # of text_reads_per_pass, on the current pass
        # Under a `text` rule that hides every line anyway, reads only label regions: one line per pass.
        self._reads_per_pass = min(cfg.text_reads_per_pass, cfg.text_reads_when_covered) if text_rule_covers(
            policy, self.order) else cfg.text_reads_per_pass
        self._lines_read = 0  # text lines the recogniser read (each once while it stays in view)
        self._lock = threading.Lock()
        self._coverage: dict[str, Counter[str]] = {c: Counter() for c in self.classes}
        self._ms: Counter[str] = Counter()  # this half's: the recogniser ("rec")
        self._deferred: Counter[str] = Counter()
        self._frames = 0
        self._by_class: Counter[str] = Counter()  # regions redacted, per class (faces included)
        segment.configure(cfg)  # person masks (policy rules with shape = "mask"): the [redact] mask_* settings

    def reset(self) -> None:
        """Forget held boxes and passes (unrelated stills follow): the next frame runs every detector.
        Only when no frame is between the two halves (stills, one thread)."""
        self.holds.clear()
        self.passes.reset()
        self._pass_n = {d: -NEVER for d in self.every}
        self._texts = (np.zeros((0, 4)), [])

    def provides(self, cls: str) -> bool:
        return cls in self.classes and not self.error

    def look(self, color: np.ndarray, shift: tuple[float, float] | None, t0: float,
             key: bool = False) -> Looked | None:
        """The first half on a frame (None when the policy has no class of this schedule)."""
        return self.passes.run(color, shift, t0, key) if self.classes else None

    # -- per frame --------------------------------------------------------------------------------
    def step(self, frame: RGBDFrame, policy: Policy, regions: list[dict[str, Any]], t0: float,
             face_ms: float, looked: Looked | None = None) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
        """(all regions, detector ms, manifest additions) for a frame whose face regions are given.
        `looked`: the passes already run on this frame (ahead, redact/ahead.py); None: run here."""
        face_classes = sorted({r["class"] for r in regions} | {r.cls for r in policy.rules if r.cls not in self.classes})
        extra: dict[str, Any] = {"classes": {c: {"coverage": "detected", "age": 0} for c in face_classes},
                                 "detector_ms_by": {"face": round(face_ms, 2)}}
        if not self.classes:
            with self._lock:
                self._by_class.update(r["class"] for r in regions)
            return regions, face_ms, extra
        looked = looked or self.passes.run(frame.color, None, t0)
        width, height = frame.size
        self._advance(looked, width, height)
        if looked.error is not None:
            raise looked.error
        ms = dict(looked.ms)
        faces = np.array([r["bbox"] for r in regions if r["class"] == "face"], np.float64).reshape(-1, 4)
        fresh = dict(looked.fresh)
        for d in fresh:
            self._pass_n[d] = looked.n
        if fresh:
            left_ms = self.cfg.budget_ms - (time.perf_counter() - t0) * 1000.0
            with Deadline(max(left_ms, 1.0) / 1000.0) as deadline:  # lines not read in time count as matches
                self._evaluate(frame.color, fresh, ms, deadline.options, faces)
        if looked.edge is not None:
            self._edge(frame.color, looked.edge, faces)
        coverage = {}
        for c in self.classes:
            age = looked.n - self._pass_n[self.roots[c]]
            if age > self.limit[self.roots[c]]:
                with self._lock:
                    self._coverage[c]["none"] += 1
                raise FrameWithheld("no_coverage", f"{c}: no {self.roots[c]} detector pass for "
                                                   f"{age if age < NEVER else 'all'} frames "
                                                   f"(limit {self.limit[self.roots[c]]}); the frame budget is too small")
            coverage[c] = {"coverage": "detected" if age == 0 else "held", "age": int(age)}
        out = list(regions)
        for c in self.classes:
            out += self._held_regions(c, policy.rule_for(c), faces, width, height)
        extra["classes"].update(coverage)
        extra["detector_ms_by"].update({k: round(v, 2) for k, v in ms.items()})
        with self._lock:
            self._frames += 1
            for c, v in coverage.items():
                self._coverage[c][v["coverage"]] += 1
            self._ms["rec"] += ms.get("rec", 0.0)
            self._by_class.update(r["class"] for r in out)
        return out, face_ms + sum(ms.values()), extra

    def absorb(self, color: np.ndarray, looked: Looked) -> None:
        """The passes of a frame withheld before its finish (its bracket's key frame failed): they still
        refresh the holds, so coverage goes on for the frames after it. Nothing is read (a form's
        `match` counts their lines as matches, private, until a pass reads them), no faces known."""
        h, w = color.shape[:2]
        self._advance(looked, w, h)
        if looked.error is not None:
            return
        fresh = dict(looked.fresh)
        for d in fresh:
            self._pass_n[d] = looked.n
        none = np.zeros((0, 4))
        if fresh:
            order = [f for f in self.order if self.roots[f.class_name] in fresh]
            results = evaluate(order, self._base(color, fresh, none), lambda idx: {})
            for f in order:
                fresh[f.class_name] = results[f.name]
            for name, found in fresh.items():
                self.holds.setdefault(name, Hold()).refresh(found.boxes, w, h)
        if looked.edge is not None:
            self._edge(color, looked.edge, none)

    def _advance(self, looked: Looked, width: int, height: int) -> None:
        """The holds moved to the frame `looked` saw: by the camera's summed shift and aged by the
        frames since the last one this half stepped (1, or more after frames it never saw)."""
        gap = max(1, looked.n - self._n)
        dx, dy = looked.offset - self._offset
        self._n, self._offset = looked.n, looked.offset
        for name, hold in self.holds.items():
            hold.step(dx, dy, self.limit[self.roots[name]], width, height, frames=gap)
        self._texts[0][:, 0::2] += dx  # lines read on the last pass move with the camera too
        self._texts[0][:, 1::2] += dy
        for d in looked.lapsed:
            self._pass_n[d] = -NEVER

    def _held_regions(self, c: str, rule: Any, faces: np.ndarray, width: int, height: int) -> list[dict[str, Any]]:
        """Class `c`'s held boxes as regions, grown by the rule's margin and margin_growth per frame held."""
        hold = self.holds.get(c) or Hold()
        b, age = hold.boxes, hold.age
        if c == "person" and len(faces) and self.cfg.person_from_faces:
            # A detected face implies a body below it, on every frame: the person model (300×300,
            # every few frames) misses or cuts short people whose faces the face path finds.
            b = np.concatenate([b, bodies(faces, width, height)])
            age = np.concatenate([age, np.zeros(len(faces), np.int64)])
        if rule is None or not len(b):
            return []
        ok = b[:, 4] >= rule.min_score
        wh = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
        pad = wh * (rule.margin + self.cfg.margin_growth * age)[:, None]
        box = np.concatenate([np.floor(b[:, :2] - pad), np.ceil(b[:, 2:4] + pad)], 1)
        box[:, 0::2] = np.clip(box[:, 0::2], 0, width)
        box[:, 1::2] = np.clip(box[:, 1::2], 0, height)
        return [{"bbox": [int(v) for v in box[i]], "class": c, "score": round(float(b[i, 4]), 4),
                 "action": rule.action, "applies_to": rule.applies_to,
                 "source": "detected" if age[i] == 0 else "propagated"}
                for i in np.nonzero(ok & (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1]))[0]]

    def _edge(self, color: np.ndarray, boxes: np.ndarray, faces: np.ndarray) -> None:
        """The edge pass's lines (redact/passes.py) and the text forms made of them join the holds
        (nothing held is replaced); unread: a form's `match` counts them as matches."""
        h, w = color.shape[:2]
        fresh = {"text": Found(boxes, [[i] for i in range(len(boxes))])}
        order = [f for f in self.order if self.roots[f.class_name] == "text"]
        results = evaluate(order, self._base(color, fresh, faces), lambda idx: {})
        for f in order:
            fresh[f.class_name] = results[f.name]
        for name, found_ in fresh.items():
            self.holds.setdefault(name, Hold()).refresh(found_.boxes, w, h, add_only=True)

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

    def _evaluate(self, color: np.ndarray, fresh: dict[str, Found], ms: dict[str, float], run_options: Any,
                  faces: np.ndarray) -> None:
        """Forms from this frame's passes; their holds refreshed."""
        base = self._base(color, fresh, faces)
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
        p = self.passes
        with self._lock, p.lock:
            n = max(self._frames, 1)
            ms = p.ms + self._ms
            return {"regions_by_class": dict(self._by_class), "forms": {
                "classes": {c: dict(v) for c, v in self._coverage.items()},
                "detector_ms_per_frame": {k: round(v / n, 2) for k, v in ms.items()},
                "cpu_ms_per_pass": {k: round(v / max(p.passes[k], 1), 2) for k, v in p.cpu.items()},
                "passes": dict(p.passes), "deferred": dict(p.deferred + self._deferred),
                "lines_read": self._lines_read, "reads_per_pass": self._reads_per_pass,
                "every": {d: self.every[d] for d in self.detectors if d in self.every},
                "models": self.models.ids(), "load_error": self.error, "canary": p.canary.status()}}
