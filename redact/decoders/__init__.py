"""Decoders turn a detector's raw outputs into boxes: one module per output format.

Every decoder returns an N×6 float32 array `x1, y1, x2, y2, score, class_id` in the pixel
coordinates of the input tensor, after thresholding and NMS, and raises `ModelGarbage` when the
outputs are not what the card promised (missing, wrong shape, NaN/inf).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from redact.cards import ModelCard
from redact.nms import MAX_CANDIDATES


class ModelGarbage(ValueError):
    """The model ran but its outputs cannot be trusted."""


class Decoder(Protocol):
    name: str
    threshold: float  # the card's score threshold

    def decode(self, outputs: dict[str, np.ndarray], size: tuple[int, int],
               threshold: float | None = None) -> np.ndarray:
        """Boxes (N×6) from outputs of one image whose tensor was `size` = (width, height);
        `threshold` overrides the card's (to collect weak candidates)."""
        ...


def empty() -> np.ndarray:
    return np.zeros((0, 6), dtype=np.float32)


def output(outputs: dict[str, np.ndarray], name: str, model: str) -> np.ndarray:
    if name not in outputs:
        raise ModelGarbage(f"{model}: no output {name!r} (outputs: {', '.join(outputs)})")
    return outputs[name]


def check_finite(a: np.ndarray, what: str) -> None:
    if not np.isfinite(a).all():
        raise ModelGarbage(f"{what}: contains NaN or infinity")


def check_candidates(n: int, threshold: float, model: str) -> None:
    """Refuse (fail closed) rather than truncate when a pass yields more boxes than NMS takes."""
    if n > MAX_CANDIDATES:
        raise ModelGarbage(f"{model}: {n} candidates above score {threshold:g} (limit {MAX_CANDIDATES}): "
                           "threshold too low, or the output is noise")


def make_decoder(card: ModelCard) -> Decoder:
    if card.decoder == "centerface":
        from redact.decoders.centerface import CenterFaceDecoder
        return CenterFaceDecoder(card)
    if card.decoder == "retinaface":
        from redact.decoders.retinaface import RetinaFaceDecoder
        return RetinaFaceDecoder(card)
    if card.decoder == "yolo":
        from redact.decoders.yolo import YoloDecoder
        return YoloDecoder(card)
    if card.decoder == "ppocr_det":
        from redact.decoders.ppocr import DBTextDecoder
        return DBTextDecoder(card)
    if card.decoder == "ssd":
        from redact.decoders.ssd import SSDDecoder
        return SSDDecoder(card)
    if card.decoder == "ssd_raw":
        from redact.decoders.ssd import SSDRawDecoder
        return SSDRawDecoder(card)
    raise ModelGarbage(f"{card.card_path}: decoder: unknown decoder {card.decoder!r}")
