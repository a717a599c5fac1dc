"""Box helpers: IoU matrices (numpy) and greedy non-maximum suppression (OpenCV's, checked against a
numpy reference kept here)."""

from __future__ import annotations

import cv2
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


MAX_CANDIDATES = 1024  # the reference IoU matrix is N×N float64: 8 MB at this size, 134 MB at 4096


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        classes: np.ndarray | None = None, max_candidates: int = MAX_CANDIDATES) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first (ties: the lower index first).

    A box is suppressed when its IoU with a kept, higher-scoring box is ≥ `iou_threshold` (as deface
    does). With `classes`, only boxes of the same class suppress each other. More than
    `max_candidates` boxes raise ValueError: dropping the weakest ones would be silent.

    OpenCV's greedy NMS (C++, O(N·kept)) does the work: the N×N matrix of `nms_reference` cost
    7 ms for the ~400 weak candidates of a 24-face crowd, 35 ms at 1024. Same kept set as
    `nms_reference` (tests/test_redact_nms.py checks it) except for an IoU within float32 rounding of
    the threshold: OpenCV's overlap is a float32 and suppresses on `>`, so it gets the float32 just
    below the threshold; it sorts by score stably, so it gets each box's rank as its score (exact
    ties, any dtype); and it would suppress between two empty boxes, which never overlap here, so
    empty boxes (zero area) are kept aside — kept, suppressing nothing, as in the reference.
    """
    n = len(scores)
    order = _ranked(scores, max_candidates)
    if n == 0:
        return order
    b = np.asarray(boxes, dtype=np.float64)[order, :4]
    wh = b[:, 2:4] - b[:, 0:2]
    solid = (wh > 0).all(axis=1)
    keep_rank = np.zeros(n, dtype=bool)
    keep_rank[~solid] = True
    thr = float(np.nextafter(np.float32(iou_threshold), np.float32(-np.inf)))
    groups = [np.flatnonzero(solid)] if classes is None else [
        np.flatnonzero(solid & (cls == c)) for cls in [np.asarray(classes)[order]] for c in np.unique(cls[solid])]
    for g in groups:
        if g.size == 0:
            continue
        if g.size == 1:
            keep_rank[g] = True
            continue
        rects = np.concatenate([b[g, 0:2], wh[g]], axis=1)
        rank_score = (n - g).astype(np.float32)  # > 0, descending with rank: OpenCV's order is ours
        kept = cv2.dnn.NMSBoxes(rects, rank_score, 0.0, thr)
        keep_rank[g[np.asarray(kept, dtype=np.int64).reshape(-1)]] = True
    return order[np.flatnonzero(keep_rank)]


def nms_reference(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                  classes: np.ndarray | None = None, max_candidates: int = MAX_CANDIDATES) -> np.ndarray:
    """The plain numpy greedy NMS (`nms`'s contract, IoU in float64): what `nms` is checked against."""
    order = _ranked(scores, max_candidates)
    if len(order) == 0:
        return order
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


def _ranked(scores: np.ndarray, max_candidates: int) -> np.ndarray:
    """Indices by descending score (stable: ties keep their order); too many candidates is a refusal."""
    if len(scores) > max_candidates:
        raise ValueError(f"{len(scores)} boxes for NMS, more than {max_candidates}")
    return np.argsort(-np.asarray(scores), kind="stable").astype(np.int64)
