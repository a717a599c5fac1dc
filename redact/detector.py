"""One model run over a frame on a schedule: the whole frame downscaled every frame, plus one
full-resolution tile per frame round-robin, so small faces get full resolution every few frames
and every frame is detected as a whole.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from redact.cards import ModelCard
from redact.decoders import Decoder, make_decoder
from redact.runtime import ModelRunError, Session


@dataclass(frozen=True)
class Pass:
    """Which part of the frame a run sees: frame pixels [x0, y0, x0 + w, y0 + h], resized by `scale`."""

    x0: int
    y0: int
    w: int
    h: int
    scale: float


def tile_origins(length: int, tile: int) -> list[int]:
    """Evenly spread tile starts covering [0, length) with at least a quarter tile of overlap."""
    if tile >= length:
        return [0]
    overlap = tile // 4
    n = max(2, math.ceil((length - overlap) / (tile - overlap)))
    return [round(k * (length - tile) / (n - 1)) for k in range(n)]


class Detector:
    def __init__(self, card: ModelCard, threads: int, cache_dir: str = "") -> None:
        self.card = card
        self.session = Session(card, threads, cache_dir)
        self.decoder: Decoder = make_decoder(card)
        self._tile_index = 0

    def plan(self, width: int, height: int, detect: tuple[int, int], tile: tuple[int, int]) -> list[Pass]:
        """Passes for this frame (advances the tile round-robin)."""
        fixed = self.card.input.size
        if fixed is not None:
            return [Pass(0, 0, width, height, 0.0)]  # resized to the fixed size, aspect not kept
        scale = min(1.0, detect[0] / width, detect[1] / height)
        passes = [Pass(0, 0, width, height, scale)]
        if scale < 1.0 and tile[0] and tile[1]:
            tiles = [(x, y) for y in tile_origins(height, tile[1]) for x in tile_origins(width, tile[0])]
            x, y = tiles[self._tile_index % len(tiles)]
            self._tile_index += 1
            passes.append(Pass(x, y, min(tile[0], width), min(tile[1], height), 1.0))
        return passes

    def run(self, color: np.ndarray, p: Pass, run_options: Any) -> np.ndarray:
        """Detections (N×6, frame pixels) of one pass over a BGR frame."""
        roi = color[p.y0:p.y0 + p.h, p.x0:p.x0 + p.w]
        inp = self.card.input
        if p.scale == 0.0:
            tw, th = inp.size  # type: ignore[misc]
            img = cv2.resize(roi, (tw, th), interpolation=cv2.INTER_AREA)
            sx, sy = tw / p.w, th / p.h
        else:
            if p.scale != 1.0:
                roi = cv2.resize(roi, (max(1, round(p.w * p.scale)), max(1, round(p.h * p.scale))),
                                 interpolation=cv2.INTER_AREA)
            m = inp.multiple
            pad_h, pad_w = -roi.shape[0] % m, -roi.shape[1] % m
            img = cv2.copyMakeBorder(roi, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0) if pad_h or pad_w else roi
            sx = roi.shape[1] / p.w
            sy = roi.shape[0] / p.h
        blob = cv2.dnn.blobFromImage(img, scalefactor=inp.scale, mean=(inp.mean, inp.mean, inp.mean),
                                     swapRB=inp.channels == "rgb")
        outputs = self.session.run(blob, run_options)
        dets = self.decoder.decode(outputs, (img.shape[1], img.shape[0]))
        if len(dets):
            dets[:, 0:4:2] = dets[:, 0:4:2] / sx + p.x0
            dets[:, 1:4:2] = dets[:, 1:4:2] / sy + p.y0
        return dets


class Deadline:
    """One frame's time limit, shared by all its model runs: onnxruntime stops a run when it expires."""

    def __init__(self, seconds: float) -> None:
        import onnxruntime as ort

        self.options = ort.RunOptions()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        self.options.terminate = True

    @property
    def expired(self) -> bool:
        return bool(self.options.terminate)

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


__all__ = ["Deadline", "Detector", "ModelRunError", "Pass", "tile_origins"]
