"""Redaction actions on one colour region, in place. `drop_frame` is handled by the stage.

Each action takes a view of the region (h×w×3 uint8) and overwrites it; none of them is reversible:
the region is first reduced to a few cells, so the original detail is gone, not just smoothed.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Action = Callable[[np.ndarray], None]


def blur(roi: np.ndarray) -> None:
    """Strong blur: ~10 px cells, upsampled smoothly, then box-blurred to hide the cell grid."""
    h, w = roi.shape[:2]
    small = cv2.resize(roi, (max(1, w // 10), max(1, h // 10)), interpolation=cv2.INTER_AREA)
    up = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    k = max(3, min(w, h) // 6) | 1
    roi[...] = cv2.blur(up, (k, k))


def pixelate(roi: np.ndarray) -> None:
    """Mosaic of about 8 cells across the longer side."""
    h, w = roi.shape[:2]
    cell = max(2, max(w, h) // 8)
    small = cv2.resize(roi, (max(1, w // cell), max(1, h // cell)), interpolation=cv2.INTER_AREA)
    roi[...] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def fill(roi: np.ndarray) -> None:
    """Solid black."""
    roi[...] = 0


ACTIONS: dict[str, Action] = {"blur": blur, "pixelate": pixelate, "fill": fill}
