"""YOLO-style box outputs → boxes. What is accepted (`decoder_options.layout`):

  * `yolov5` (default): one output [1, N, 5 + C] rows `cx, cy, w, h, objectness, class scores...`;
    score = objectness × best class score;
  * `yolov8`: one output [1, 4 + C, N] columns `cx, cy, w, h, class scores...`; score = best class score.

`box_format = "xyxy"` reads the first four values as corners instead. Coordinates are input-tensor
pixels. C must equal the card's number of classes. Options: output (name; default the first
output), threshold (0.25), nms_iou (0.45), per-class NMS.
"""

from __future__ import annotations

import numpy as np

from redact.cards import ModelCard
from redact.decoders import ModelGarbage, check_candidates, check_finite, empty
from redact.decoders.options import number, text
from redact.nms import nms


class YoloDecoder:
    name = "yolo"

    def __init__(self, card: ModelCard) -> None:
        self.model = card.name
        self.n_classes = len(card.classes)
        self.layout = text(card, "layout", "yolov5", ("yolov5", "yolov8"))
        self.box_format = text(card, "box_format", "cxcywh", ("cxcywh", "xyxy"))
        self.output = text(card, "output", "")
        self.threshold = number(card, "threshold", 0.25, 0.01, 1.0)
        self.nms_iou = number(card, "nms_iou", 0.45, 0.0, 1.0)

    def decode(self, outputs: dict[str, np.ndarray], size: tuple[int, int],
               threshold: float | None = None) -> np.ndarray:
        thr = self.threshold if threshold is None else threshold
        name = self.output or next(iter(outputs))
        if name not in outputs:
            raise ModelGarbage(f"{self.model}: no output {name!r} (outputs: {', '.join(outputs)})")
        out = outputs[name]
        width, height = size
        c = self.n_classes
        if self.layout == "yolov5":
            if out.ndim != 3 or out.shape[0] != 1 or out.shape[2] != 5 + c:
                raise ModelGarbage(f"{self.model}: output {name!r} has shape {out.shape}, expected (1, N, {5 + c})")
            rows = out[0]
            cls_scores = rows[:, 5:]
            obj = rows[:, 4]
        else:
            if out.ndim != 3 or out.shape[0] != 1 or out.shape[1] != 4 + c:
                raise ModelGarbage(f"{self.model}: output {name!r} has shape {out.shape}, expected (1, {4 + c}, N)")
            rows = out[0].T
            cls_scores = rows[:, 4:]
            obj = None
        check_finite(rows, f"{self.model}: output {name!r}")
        cls = np.argmax(cls_scores, axis=1)
        score = cls_scores[np.arange(len(rows)), cls]
        if obj is not None:
            score = score * obj
        sel = score > thr
        if not sel.any():
            return empty()
        check_candidates(int(sel.sum()), thr, self.model)
        b = rows[sel, :4].astype(np.float64)
        if self.box_format == "cxcywh":
            b = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
        b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
        b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
        boxes = np.concatenate([b, score[sel, None], cls[sel, None].astype(np.float64)], axis=1)
        keep = nms(boxes[:, :4], boxes[:, 4], self.nms_iou, classes=boxes[:, 5])
        return boxes[keep].astype(np.float32)
