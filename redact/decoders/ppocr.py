"""PP-OCR (PaddleOCR v4, as shipped in rapidocr-onnxruntime 1.4.4) outputs → text boxes and strings.

Detector (DB, "differentiable binarisation"): one output [1, 1, H, W], the probability that each
input pixel is text. Pixels above `bin_threshold` (0.3) form connected regions; a region scores the
mean probability of its text pixels and is kept at `threshold` (0.5, the reference `box_thresh`); its min-area
rectangle is grown by `unclip_ratio` (1.6: area × ratio / perimeter added on every side, as the
reference's polygon offset does for a rectangle) and returned axis-aligned (a redaction covers the
whole tilted line). Class id 0 = the card's `text`.

Recogniser (CRNN/SVTR + CTC): output [N, T, C] per-step class probabilities; class 0 is the CTC
blank, 1..C-2 the model's character list (stored in the ONNX metadata key `character`), C-1 a space.
Greedy CTC decoding: best class per step, repeats collapsed, blanks dropped; the score is the mean
probability of the kept steps.
"""

from __future__ import annotations

import cv2
import numpy as np

from redact.cards import ModelCard
from redact.decoders import ModelGarbage, check_finite, empty, output
from redact.decoders.options import number, text
from redact.nms import MAX_CANDIDATES


class DBTextDecoder:
    name = "ppocr_det"

    def __init__(self, card: ModelCard) -> None:
        self.model = card.name
        self.output = text(card, "output", "sigmoid_0.tmp_0")
        self.threshold = number(card, "threshold", 0.5, 0.01, 1.0)
        self.bin_threshold = number(card, "bin_threshold", 0.3, 0.01, 1.0)
        self.unclip_ratio = number(card, "unclip_ratio", 1.6, 0.0, 5.0)
        self.min_side = number(card, "min_side", 3.0, 0.0, 1000.0)
        self.class_id = float(card.classes.index("text")) if "text" in card.classes else 0.0

    def decode(self, outputs: dict[str, np.ndarray], size: tuple[int, int],
               threshold: float | None = None) -> np.ndarray:
        thr = self.threshold if threshold is None else threshold
        width, height = size
        prob = output(outputs, self.output, self.model)
        if prob.ndim != 4 or prob.shape[:2] != (1, 1) or prob.shape[2:] != (height, width):
            raise ModelGarbage(f"{self.model}: output {self.output!r} has shape {prob.shape}, "
                               f"expected (1, 1, {height}, {width})")
        pm = prob[0, 0]
        check_finite(pm, f"{self.model}: probability map")
        text = (pm > self.bin_threshold).astype(np.uint8)
        # The reference dilates the binary map by a 2x2 kernel before finding regions.
        mask = cv2.dilate(text, np.ones((2, 2), np.uint8))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        if n <= 1:
            return empty()
        if n - 1 > MAX_CANDIDATES:
            raise ModelGarbage(f"{self.model}: {n - 1} text regions (limit {MAX_CANDIDATES}): the output is noise")
        # Mean probability of each region's text pixels, in one pass (bincount over labels).
        sums = np.bincount(labels.ravel(), weights=(pm * text).ravel(), minlength=n)
        scores = sums / np.maximum(np.bincount(labels.ravel(), weights=text.ravel(), minlength=n), 1)
        boxes = []
        for k in np.nonzero(scores[1:] >= thr)[0] + 1:  # one min-area rectangle per kept region
            x, y, w, h = stats[k, :4]
            if min(w, h) < self.min_side:
                continue
            ys, xs = np.nonzero(labels[y:y + h, x:x + w] == k)
            (cx, cy), (rw, rh), angle = cv2.minAreaRect(np.stack([xs + x, ys + y], 1).astype(np.float32))
            d = rw * rh * self.unclip_ratio / max(2 * (rw + rh), 1e-6)
            pts = cv2.boxPoints(((cx, cy), (rw + 2 * d, rh + 2 * d), angle))
            x1, y1 = pts.min(0)
            x2, y2 = pts.max(0)
            boxes.append([max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2),
                          float(scores[k]), self.class_id])
        if not boxes:
            return empty()
        return np.array(boxes, np.float32)


class CTCTextDecoder:
    """Greedy CTC decoding with the recogniser's own character list."""

    name = "ppocr_rec"

    def __init__(self, card: ModelCard, characters: list[str]) -> None:
        self.model = card.name
        self.threshold = number(card, "threshold", 0.5, 0.0, 1.0)
        self.characters = np.array(["", *characters, " "], dtype=object)

    def decode_strings(self, probs: np.ndarray) -> list[tuple[str, float]]:
        if probs.ndim != 3 or probs.shape[2] != len(self.characters):
            raise ModelGarbage(f"{self.model}: output has shape {probs.shape}, expected (N, T, {len(self.characters)})")
        check_finite(probs, f"{self.model}: character probabilities")
        best = probs.argmax(axis=2)
        conf = probs.max(axis=2)
        out = []
        for seq, cf in zip(best, conf, strict=True):
            keep = seq != 0
            keep[1:] &= seq[1:] != seq[:-1]
            s = "".join(self.characters[seq[keep]])
            out.append((s, float(cf[keep].mean()) if keep.any() else 0.0))
        return out
