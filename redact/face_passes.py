"""The face detection passes of the redaction stage (a part of `RedactStage`, redact/stage.py).

A key frame's whole-frame pass per detector, downscaled to `detect_width/height`, with one
full-resolution look (a mosaic of 64×64 crops, `verify_candidates`, `verify_gap`) at what it may see
too small — its weak small candidates and small tracks it did not confirm; the verify model's own
whole-frame pass every `verify_model_every` frames; the cheap pass on frames between key frames
(`face_between_width/height`). Detections come out as N×6 arrays (x1, y1, x2, y2, score, stage class
id), above their rule's `min_score`, one box per face (NMS). Faults raise `FrameWithheld`; the
stage decides what a withheld frame means. The state these passes read (detectors, verifier,
tracker, class ids, clocks) is the stage's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from capture.frame import FrameWithheld, RGBDFrame
from redact.detector import Deadline, Detector
from redact.nms import iou_matrix, nms
from redact.policy import Policy
from redact.tracker import Tracker
from redact.withheld import as_withheld

VERIFY_MAX_SIDE = 40  # px: weak candidates larger than this were seen well enough downscaled


class FacePasses:
    """Mixed into `RedactStage`: the face passes over one frame (see the module docstring)."""

    # provided by RedactStage
    cfg: Any
    detectors: list[Detector]
    verifier: Detector | None
    tracker: Tracker
    load_error: str
    _policy_error: str
    _classes: list[str]
    _class_ids: dict[str, int]
    _verifier_clock: int

    def between_pass(self, frame: RGBDFrame, policy: Policy) -> tuple[np.ndarray, dict[str, Any]]:
        """The cheap whole-frame pass on a frame between key frames (`face_between_width`): its
        detections (N×6, stage class ids) and its manifest `passes`; faults raise FrameWithheld."""
        width, height = frame.size
        size = (self.cfg.face_between_width, self.cfg.face_between_height)
        t0 = time.perf_counter()
        found, passes = [np.zeros((0, 6), np.float32)], {}
        try:
            if self.load_error or self._policy_error:
                raise FrameWithheld("no_model", self.load_error or self._policy_error)
            with Deadline(self.cfg.budget_ms / 1000.0) as deadline:
                for det in self.detectors:
                    whole, _ = det.plan(width, height, size, (0, 0))
                    found.append(self._classed(det, det.run(frame.color, whole, deadline.options,
                                                            self._threshold(det, policy))))
                    passes[det.card.name] = {"whole": [round(width * whole.scale), round(height * whole.scale)],
                                             "tiles": 0}
            ms = (time.perf_counter() - t0) * 1000.0
            if deadline.expired or ms > self.cfg.budget_ms:
                raise FrameWithheld("model_timeout", f"between-key-frames pass took {ms:.0f} ms, budget "
                                                     f"{self.cfg.budget_ms:.0f} ms")
        except FrameWithheld:
            raise
        except Exception as e:
            raise as_withheld(e) from e
        return self._kept(np.concatenate(found), policy), passes

    def _threshold(self, det: Detector, policy: Policy) -> float:
        # A rule asking for a lower score than the card's threshold gets it.
        return min([det.decoder.threshold] + [r.min_score for r in policy.rules if r.cls in det.card.classes])

    def _kept(self, dets: np.ndarray, policy: Policy) -> np.ndarray:
        """Detections above their rule's min_score; the same face seen by several passes: the best box."""
        if len(dets):
            rules = [policy.rule_for(c) for c in self._classes]
            min_score = np.array([r.min_score if r else np.inf for r in rules])
            dets = dets[dets[:, 4] >= min_score[dets[:, 5].astype(np.int64)]]
        if len(dets):
            dets = dets[nms(dets[:, :4], dets[:, 4], 0.3, classes=dets[:, 5])]
        return dets

    def _whole_pass(self, det: Detector, color: np.ndarray, whole: Any, run_options: Any, thr: float) -> np.ndarray:
        """The downscaled whole-frame pass, plus a full-resolution look (one mosaic run) at what it
        may see too small: small tracks it did not confirm, and its weak small candidates."""
        cfg = self.cfg
        verifier = self.verifier if self.verifier and set(det.card.classes) <= set(self.verifier.card.classes) else det
        if (not cfg.verify_candidates or whole.scale == 0.0 or (whole.scale == 1.0 and verifier is det)
                or cfg.verify_min_score >= thr):
            return self._classed(det, det.run(color, whole, run_options, thr))
        d = det.run(color, whole, run_options, threshold=cfg.verify_min_score)
        strong = d[d[:, 4] > thr]
        weak = d[d[:, 4] <= thr]
        tr = self.tracker
        mine = np.isin(tr.cls, [self._class_ids[c] for c in det.card.classes])
        tracks = np.zeros((0, 6), np.float32)
        if mine.any():
            predicted = (tr.boxes + tr.vel)[mine]
            if len(strong):
                predicted = predicted[iou_matrix(predicted, strong[:, :4]).max(axis=1) < 0.3]
            tracks = np.concatenate([predicted, np.ones((len(predicted), 2))], axis=1).astype(np.float32)
        cands = np.concatenate([weak, tracks])  # weak candidates first (best first): new faces; tracks are held anyway
        small = np.maximum(cands[:, 2] - cands[:, 0], cands[:, 3] - cands[:, 1]) <= VERIFY_MAX_SIDE
        confirmed = verifier.verify(color, cands[small][: cfg.verify_candidates], run_options, thr, cfg.verify_gap)
        if verifier is not det and len(confirmed):  # only the classes this detector stands for
            mine_v = [verifier.card.classes.index(c) for c in det.card.classes]
            confirmed = confirmed[np.isin(confirmed[:, 5], mine_v)]
        return np.concatenate([self._classed(det, strong), self._classed(verifier, confirmed)])

    def _scheduled_verifier_pass(self, color: np.ndarray, policy: Policy, run_options: Any,
                                 frames: int = 1) -> list[np.ndarray]:
        """Every `verify_model_every` frames the verify model also looks at the whole frame (downscaled,
        with its own full-resolution check of weak small candidates): a second opinion on faces the
        main detector scores too low to propose (tiny ones, crowds)."""
        v, every = self.verifier, self.cfg.verify_model_every
        first = self._verifier_clock  # due when one of the `frames` frames since the last call is its turn
        self._verifier_clock += frames
        due = bool(every) and any((first + i) % every == 0 for i in range(frames))
        if v is None or not due or not set(v.card.classes) <= set(self._class_ids):
            return []
        h, w = color.shape[:2]
        whole, _ = v.plan(w, h, (self.cfg.detect_width_verify, self.cfg.detect_height_verify), (0, 0))
        return [self._whole_pass(v, color, whole, run_options, self._threshold(v, policy))]

    def _classed(self, det: Detector, d: np.ndarray) -> np.ndarray:
        """Detections with the model's class ids replaced by the stage's."""
        if len(d):
            d[:, 5] = np.array([self._class_ids[det.card.classes[int(c)]] for c in d[:, 5]])
        return d
