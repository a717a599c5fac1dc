"""CenterFace outputs → face boxes (the same arithmetic as the reference decoder, vectorised).

Outputs at 1/4 of the input size: heatmap [1,1,h,w], scale [1,2,h,w] (log of box h, w / 4),
offset [1,2,h,w] (sub-cell centre offset y, x). Landmarks are not needed for redaction.
"""

from __future__ import annotations

import cv2
import numpy as np

from redact.cards import ModelCard
from redact.decoders import ModelGarbage, check_candidates, check_finite, empty, output
from redact.decoders.options import number, text
from redact.nms import MAX_CANDIDATES, nms


class CenterFaceDecoder:
    name = "centerface"

    def __init__(self, card: ModelCard) -> None:
        self.model = card.name
        self.threshold = number(card, "threshold", 0.2, 0.01, 1.0)
        self.nms_iou = number(card, "nms_iou", 0.3, 0.0, 1.0)
        self.heatmap = text(card, "heatmap", "537")
        self.box_scale = text(card, "box_scale", "538")
        self.offset = text(card, "offset", "539")
        self.class_id = float(card.classes.index("face")) if "face" in card.classes else 0.0

    def decode(self, outputs: dict[str, np.ndarray], size: tuple[int, int],
               threshold: float | None = None) -> np.ndarray:
        thr = self.threshold if threshold is None else threshold
        width, height = size
        hm = output(outputs, self.heatmap, self.model)
        sc = output(outputs, self.box_scale, self.model)
        of = output(outputs, self.offset, self.model)
        h, w = height // 4, width // 4
        for name, a, ch in ((self.heatmap, hm, 1), (self.box_scale, sc, 2), (self.offset, of, 2)):
            if a.shape != (1, ch, h, w):
                raise ModelGarbage(f"{self.model}: output {name!r} has shape {a.shape}, "
                                   f"expected {(1, ch, h, w)} for a {width}x{height} input")
        check_finite(hm, f"{self.model}: heatmap")
        c0, c1 = np.nonzero(hm[0, 0] > thr)
        if c0.size == 0:
            return empty()
        if c0.size > MAX_CANDIDATES:
            # A big face (a close-up still) lights up thousands of cells: keep the 3×3 peaks
            # (CenterNet's own decoding) instead of refusing the frame.
            peaks = hm[0, 0] >= cv2.dilate(hm[0, 0], np.ones((3, 3), np.uint8))
            c0, c1 = np.nonzero((hm[0, 0] > thr) & peaks)
        check_candidates(c0.size, thr, self.model)
        s = np.stack([sc[0, 0, c0, c1], sc[0, 1, c0, c1], of[0, 0, c0, c1], of[0, 1, c0, c1]])
        check_finite(s, f"{self.model}: scale/offset")
        with np.errstate(over="ignore"):
            s0 = np.exp(s[0].astype(np.float64)) * 4  # box height
            s1 = np.exp(s[1].astype(np.float64)) * 4  # box width
        x1 = np.clip((c1 + s[3] + 0.5) * 4 - s1 / 2, 0, width)
        y1 = np.clip((c0 + s[2] + 0.5) * 4 - s0 / 2, 0, height)
        x2 = np.minimum(x1 + s1, width)
        y2 = np.minimum(y1 + s0, height)
        boxes = np.stack([x1, y1, x2, y2, hm[0, 0, c0, c1], np.full(c0.size, self.class_id)], axis=1)
        keep = nms(boxes[:, :4], boxes[:, 4], self.nms_iou)
        return boxes[keep].astype(np.float32)
