"""The camera's global image shift between two frames, from a small grey copy (~0.45 CPU-ms at 640×480).

Phase correlation of 160-px-wide grey copies (made by exact 2× area halvings, OpenCV's fast path: the
same pixels as one INTER_AREA resize to ±1 level, at 0.25× its CPU — 0.17 vs 0.67 ms at 640×480 — and
measured as 1.1 of the face path's ~12 CPU-ms per frame before); the shift is the content's displacement from the
previous frame to this one, in full-frame pixels. No reliable peak (a low response, a scene change,
a non-finite result) gives (0, 0): callers cover that uncertainty with their growing margins.
Used by the form schedule's held boxes (redact/schedule.py) and the face bracket's backward
projection (redact/bracket.py).
"""

from __future__ import annotations

import cv2
import numpy as np

MOTION_WIDTH = 160
MIN_RESPONSE = 0.05  # phase correlation peaks below this are noise


class Motion:
    """Keeps the previous frame's small grey copy; `step` gives the shift since that frame."""

    def __init__(self) -> None:
        self._prev: np.ndarray | None = None

    def reset(self) -> None:
        self._prev = None

    def step(self, color: np.ndarray, measure: bool = True) -> tuple[float, float]:
        """(dx, dy) of the image content since the previous call's frame; (0, 0) for the first frame,
        after a size change, or when `measure` is False (the grey copy is still kept for the next call)."""
        h, w = color.shape[:2]
        s = MOTION_WIDTH / w
        g = cv2.cvtColor(small(color, MOTION_WIDTH, max(8, round(h * s))), cv2.COLOR_BGR2GRAY).astype(np.float32)
        prev, self._prev = self._prev, g
        if prev is None or prev.shape != g.shape or not measure:
            return 0.0, 0.0
        (sx, sy), response = cv2.phaseCorrelate(prev, g)
        if response < MIN_RESPONSE or not np.isfinite(sx) or not np.isfinite(sy):
            return 0.0, 0.0  # no reliable shift: the growing margin has to cover it
        return sx / s, sy / s


def small(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """`img` area-resized to width×height: exact 2× halvings while they fit (OpenCV's fast INTER_AREA
    path), then one INTER_AREA resize for the rest (none when the halvings land on the size)."""
    while img.shape[1] >= 2 * width and img.shape[0] >= 2 * height:
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if img.shape[1] != width or img.shape[0] != height:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return img
