"""Read the text inside boxes (PP-OCR recogniser): for rule-defined forms only.

The strings exist in memory while the rules are evaluated and in the hold state of the track they
belong to; they are never put in a manifest, a status, a log line or an exception message — a
recognised string of a redacted region is exactly what is private. All boxes of a frame are read in
one batched model run (crops resized to the card's height, padded to the widest).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from redact.cards import CardError, ModelCard
from redact.decoders.options import number
from redact.decoders.ppocr import CTCTextDecoder
from redact.runtime import Session

BATCH = 6  # lines per recogniser run (as the reference)


class TextRecognizer:
    def __init__(self, card: ModelCard, threads: int, cache_dir: str = "") -> None:
        if card.decoder != "ppocr_rec":
            raise CardError(f"{card.card_path}: decoder: expected 'ppocr_rec' for a text recogniser, got {card.decoder!r}")
        self.card = card
        self.session = Session(card, threads, cache_dir)
        chars = self.session.metadata().get("character", "").splitlines()
        if not chars:
            raise CardError(f"{card.card_path}: file: {card.file} has no character list (ONNX metadata 'character')")
        self.decoder = CTCTextDecoder(card, chars)
        self.height = int(number(card, "height", 48, 8, 256))
        self.max_width = int(number(card, "max_width", 320, 16, 4096))
        self.threshold = self.decoder.threshold

    def read(self, color: np.ndarray, boxes: np.ndarray, run_options: Any) -> list[tuple[str, float]]:
        """(string, confidence) per box (N×≥4, frame pixels); "" for a box too small to read."""
        if not len(boxes):
            return []
        h, w = color.shape[:2]
        crops: list[np.ndarray | None] = []
        for x1, y1, x2, y2 in np.asarray(boxes)[:, :4]:
            xa, ya = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
            xb, yb = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
            if xb - xa < 4 or yb - ya < 4:
                crops.append(None)
                continue
            crop = color[ya:yb, xa:xb]
            if crop.shape[0] > 1.5 * crop.shape[1]:  # a vertical line: read it turned
                crop = cv2.rotate(crop, cv2.ROTATE_90_COUNTERCLOCKWISE)
            cw = min(self.max_width, max(8, int(np.ceil(self.height * crop.shape[1] / crop.shape[0]))))
            crops.append(cv2.resize(crop, (cw, self.height), interpolation=cv2.INTER_LINEAR))
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        live = sorted((c.shape[1], i) for i, c in enumerate(crops) if c is not None)
        inp = self.card.input
        # Batches of similar widths (sorted), so that short lines are not padded to the longest.
        for start in range(0, len(live), BATCH):
            group = [i for _, i in live[start:start + BATCH]]
            width = -(-max(crops[i].shape[1] for i in group) // 8) * 8  # type: ignore[union-attr]
            batch = np.zeros((len(group), 3, self.height, width), np.float32)
            for k, i in enumerate(group):
                c = crops[i]
                assert c is not None
                batch[k, :, :, :c.shape[1]] = ((c.astype(np.float32) - inp.mean) * inp.scale).transpose(2, 0, 1)
            outputs = self.session.run(batch, run_options)
            for i, res in zip(group, self.decoder.decode_strings(next(iter(outputs.values()))), strict=True):
                out[i] = res
        return out
