"""TensorFlow Object Detection API SSD outputs (as converted by tf2onnx) → boxes.

Outputs: `detection_boxes:0` [1, N, 4] (ymin, xmin, ymax, xmax, fractions of the input),
`detection_scores:0` [1, N], `detection_classes:0` [1, N] (1-based label ids), `num_detections:0` [1].
The graph has already applied its own NMS; boxes are scaled to the input tensor's pixels and
thresholded. `label` (decoder option, default 1) is the model's label id mapped to the card's
first class (the pedestrian model has one label: person).

`ssd_raw` (SSDRawDecoder): the same graph cut before its NMS loop (models/tools/cut_ssdlite.py):
`boxes` [1, N, 1, 4] (decoded, ymin, xmin, ymax, xmax as fractions) and `scores` [1, N, 1] (the
person's sigmoid score); the boxes above the threshold go through OpenCV's greedy NMS at `nms_iou`
(the graph's own 0.6) and at most `max_detections` (100, the graph's) are kept, best first. The
graph's NMS ran over every box above 1e-8 before the threshold: a box above it is suppressed only by
a better one, also above it, so thresholding first keeps the same boxes.
"""

from __future__ import annotations

import numpy as np

from redact.cards import ModelCard
from redact.decoders import ModelGarbage, check_finite, empty, output
from redact.decoders.options import number
from redact.nms import nms


class SSDDecoder:
    name = "ssd"

    def __init__(self, card: ModelCard) -> None:
        self.model = card.name
        self.threshold = number(card, "threshold", 0.5, 0.01, 1.0)
        self.label = number(card, "label", 1, 0, 1000)

    def decode(self, outputs: dict[str, np.ndarray], size: tuple[int, int],
               threshold: float | None = None) -> np.ndarray:
        thr = self.threshold if threshold is None else threshold
        width, height = size
        boxes = output(outputs, "detection_boxes:0", self.model)
        scores = output(outputs, "detection_scores:0", self.model)
        labels = output(outputs, "detection_classes:0", self.model)
        num = output(outputs, "num_detections:0", self.model)
        if boxes.ndim != 3 or boxes.shape[0] != 1 or boxes.shape[2] != 4 or scores.shape != boxes.shape[:2] \
                or labels.shape != boxes.shape[:2] or num.size != 1:
            raise ModelGarbage(f"{self.model}: outputs have shapes boxes {boxes.shape}, scores {scores.shape}, "
                               f"classes {labels.shape}, num {num.shape}; expected [1,N,4], [1,N], [1,N], [1]")
        for what, a in (("boxes", boxes), ("scores", scores), ("num_detections", num)):
            check_finite(a, f"{self.model}: {what}")
        n = int(min(max(float(num.ravel()[0]), 0), boxes.shape[1]))
        b, s, c = boxes[0, :n], scores[0, :n], labels[0, :n]
        sel = (s > thr) & (np.rint(c) == self.label)
        if not sel.any():
            return empty()
        b = np.clip(b[sel].astype(np.float64), 0.0, 1.0)
        out = np.stack([b[:, 1] * width, b[:, 0] * height, b[:, 3] * width, b[:, 2] * height,
                        s[sel], np.zeros(int(sel.sum()))], axis=1)
        return out.astype(np.float32)


class SSDRawDecoder:
    name = "ssd_raw"

    def __init__(self, card: ModelCard) -> None:
        self.model = card.name
        self.threshold = number(card, "threshold", 0.5, 0.01, 1.0)
        self.iou = number(card, "nms_iou", 0.6, 0.01, 1.0)
        self.max_detections = int(number(card, "max_detections", 100, 1, 10000))

    def decode(self, outputs: dict[str, np.ndarray], size: tuple[int, int],
               threshold: float | None = None) -> np.ndarray:
        thr = self.threshold if threshold is None else threshold
        width, height = size
        boxes = output(outputs, "boxes", self.model)
        scores = output(outputs, "scores", self.model)
        if boxes.ndim != 4 or boxes.shape[0] != 1 or boxes.shape[2:] != (1, 4) or scores.shape != boxes.shape[:3]:
            raise ModelGarbage(f"{self.model}: outputs have shapes boxes {boxes.shape}, scores {scores.shape}; "
                               "expected [1,N,1,4] and [1,N,1]")
        check_finite(boxes, f"{self.model}: boxes")
        check_finite(scores, f"{self.model}: scores")
        s = scores[0, :, 0]
        sel = np.nonzero(s > thr)[0]
        if not len(sel):
            return empty()
        b = np.clip(boxes[0, sel, 0].astype(np.float64), 0.0, 1.0)
        xyxy = np.stack([b[:, 1] * width, b[:, 0] * height, b[:, 3] * width, b[:, 2] * height], axis=1)
        keep = nms(xyxy, s[sel].astype(np.float64), self.iou)[:self.max_detections]
        out = np.concatenate([xyxy[keep], s[sel][keep, None], np.zeros((len(keep), 1))], axis=1)
        return out.astype(np.float32)
