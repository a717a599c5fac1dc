"""Hold boxes across frames so a face that slips past the detector for a few frames stays covered.

Each track keeps its last confirmed box and a box velocity (EMA of displacement per frame). Every
frame the box moves by its velocity; a detection of the same class that overlaps the predicted box
confirms it. An unconfirmed track is held for `hold_frames` and its region grows by
`margin_growth` (fraction of the box per frame) plus its speed, so it keeps covering a face that
moves or that the detector dropped. Tracks that are views of one face (overlapping, same class)
are merged into the most recently confirmed one, so one face is one region. Each track has an `id`
(unique for the tracker's life, kept through merges by the surviving track): the face bracket
(redact/bracket.py) finds by it the tracks confirmed on two key frames, to interpolate between them.
"""

from __future__ import annotations

import numpy as np

from redact.nms import iou_matrix


class Tracker:
    def __init__(self, hold_frames: int = 10, margin_growth: float = 0.04, match_iou: float = 0.1,
                 velocity_alpha: float = 0.6, merge_iou: float = 0.3, merge_cover: float = 0.7) -> None:
        self.merge_iou = merge_iou
        self.merge_cover = merge_cover
        self.hold_frames = hold_frames
        self.margin_growth = margin_growth
        self.match_iou = match_iou
        self.alpha = velocity_alpha
        self.boxes = np.zeros((0, 4))
        self.vel = np.zeros((0, 4))
        self.anchor = np.zeros((0, 4))  # last confirmed box
        self.score = np.zeros(0)
        self.cls = np.zeros(0, dtype=np.int64)
        self.age = np.zeros(0, dtype=np.int64)  # frames since last confirmed
        self.ids = np.zeros(0, dtype=np.int64)
        self._next_id = 0

    def __len__(self) -> int:
        return len(self.score)

    def reset(self) -> None:
        self.__init__(self.hold_frames, self.margin_growth, self.match_iou, self.alpha,  # type: ignore[misc]
                      self.merge_iou, self.merge_cover)

    def update(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Advance one frame with this frame's detections (frame pixels); indices of live tracks."""
        self.boxes = self.boxes + self.vel
        self.age = self.age + 1
        n_det = len(scores)
        matched_det = np.zeros(n_det, dtype=bool)
        if len(self) and n_det:
            iou = iou_matrix(boxes, self.boxes)
            iou[classes[:, None] != self.cls[None, :]] = 0.0
            while True:  # greedy: one step per matched pair
                d, t = np.unravel_index(np.argmax(iou), iou.shape)
                if iou[d, t] < self.match_iou:
                    break
                step = (boxes[d] - self.anchor[t]) / self.age[t]
                self.vel[t] = self.alpha * step + (1 - self.alpha) * self.vel[t]
                self.boxes[t] = self.anchor[t] = boxes[d]
                self.score[t] = scores[d]
                self.age[t] = 0
                matched_det[d] = True
                iou[d, :] = -1.0
                iou[:, t] = -1.0
        new = ~matched_det
        if new.any():
            self.boxes = np.concatenate([self.boxes, boxes[new]])
            self.anchor = np.concatenate([self.anchor, boxes[new]])
            self.vel = np.concatenate([self.vel, np.zeros((int(new.sum()), 4))])
            self.score = np.concatenate([self.score, scores[new]])
            self.cls = np.concatenate([self.cls, classes[new]])
            self.age = np.concatenate([self.age, np.zeros(int(new.sum()), dtype=np.int64)])
            self.ids = np.concatenate([self.ids, self._next_id + np.arange(int(new.sum()), dtype=np.int64)])
            self._next_id += int(new.sum())
        alive = (self.age <= self.hold_frames) & self._not_duplicate()
        if not alive.all():
            for name in ("boxes", "vel", "anchor", "score", "cls", "age", "ids"):
                setattr(self, name, getattr(self, name)[alive])
        return np.arange(len(self))

    def _not_duplicate(self) -> np.ndarray:
        """False for a track that is another view of the same face as a better track (same class;
        IoU ≥ `merge_iou`, or ≥ `merge_cover` of the smaller box inside the other): several detections
        of one face (whole-frame pass, tile, verify) must not pile up as boxes. The better track is
        the more recently confirmed one (then the higher score): a fresh detection beats a stale
        prediction."""
        n = len(self)
        keep = np.ones(n, dtype=bool)
        if n < 2:
            return keep
        b = self.boxes
        iou = iou_matrix(b, b)
        iw = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
        ih = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            cover = np.where(np.minimum(area[:, None], area[None, :]) > 0,
                             iw * ih / np.minimum(area[:, None], area[None, :]), 0.0)
        same = ((iou >= self.merge_iou) | (cover >= self.merge_cover)) & (self.cls[:, None] == self.cls[None, :])
        np.fill_diagonal(same, False)
        if not same.any():
            return keep
        order = np.lexsort((-self.score, self.age))  # best first
        for i in order:
            if keep[i]:
                dup = same[i] & keep
                dup[i] = False
                keep[dup] = False
        return keep

    def regions(self, margins: np.ndarray, width: int, height: int) -> np.ndarray:
        """Integer regions x1,y1,x2,y2 (clipped) of all tracks, each grown by its rule's margin,
        by `margin_growth` per unconfirmed frame and by its speed while unconfirmed."""
        b = self.boxes
        wh = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
        grow = margins + self.margin_growth * self.age
        speed = np.abs(self.vel).reshape(-1, 2, 2).max(axis=1) * np.minimum(self.age, 1)[:, None]
        pad = wh * grow[:, None] + speed
        out = np.empty((len(b), 4))
        out[:, :2] = np.floor(b[:, :2] - pad)
        out[:, 2:] = np.ceil(b[:, 2:] + pad)
        out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
        out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
        return out.astype(np.int64)
