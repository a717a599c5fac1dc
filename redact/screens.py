"""Screens (monitors, phones, laptops showing content): bright rectangles with text in them.

No screen model ships in any wheel we may use, so a screen is found from what it looks like: a
convex four-cornered region (edges of the panel against its bezel or the wall), lit brighter than
the ring around it, with at least one detected text line inside. Runs on a 320-px-wide grey copy
(~1-2 ms). Measured in `python -m bench redact_forms` (recall on synthetic screens, false alarms on
the scene's documents and signs).
"""

from __future__ import annotations

import cv2
import numpy as np

WORK_WIDTH = 320
MIN_AREA = 0.004  # of the frame
BRIGHTER = 1.15  # mean inside / mean of the surrounding ring


def find_screens(color: np.ndarray, text_boxes: np.ndarray) -> np.ndarray:
    """Screen boxes N×5 (x1, y1, x2, y2, score) in frame pixels; text_boxes N×≥4 in frame pixels."""
    if not len(text_boxes):
        return np.zeros((0, 5))
    h, w = color.shape[:2]
    s = WORK_WIDTH / w
    gray = cv2.cvtColor(cv2.resize(color, (WORK_WIDTH, max(1, round(h * s))), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_BGR2GRAY)
    edges = cv2.dilate(cv2.Canny(gray, 40, 120), np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    gh, gw = gray.shape
    min_area = MIN_AREA * gh * gw
    tc = np.stack([(text_boxes[:, 0] + text_boxes[:, 2]) / 2, (text_boxes[:, 1] + text_boxes[:, 3]) / 2], 1) * s
    found = []
    for c in contours:
        area = cv2.contourArea(c)
        if area < min_area or area > 0.9 * gh * gw:
            continue
        approx = cv2.approxPolyDP(c, 0.03 * cv2.arcLength(c, True), True)
        if len(approx) != 4 or not cv2.isContourConvex(approx):
            continue
        (_, _), (rw, rh), _ = cv2.minAreaRect(approx)
        if min(rw, rh) < 6 or not 0.25 <= rw / max(rh, 1e-6) <= 4.0:
            continue
        x, y, bw, bh = cv2.boundingRect(approx)
        inside = (tc[:, 0] > x) & (tc[:, 0] < x + bw) & (tc[:, 1] > y) & (tc[:, 1] < y + bh)
        if not inside.any():
            continue
        pad = max(3, int(0.15 * max(bw, bh)))
        ring = gray[max(0, y - pad):y + bh + pad, max(0, x - pad):x + bw + pad].astype(np.float64)
        inner = gray[y:y + bh, x:x + bw].astype(np.float64)
        ring_mean = (ring.sum() - inner.sum()) / max(ring.size - inner.size, 1)
        ratio = inner.mean() / max(ring_mean, 1.0)
        if ratio < BRIGHTER:
            continue
        found.append([x / s, y / s, (x + bw) / s, (y + bh) / s, min(1.0, 0.5 + 0.25 * (ratio - 1.0))])
    if not found:
        return np.zeros((0, 5))
    out = np.array(found)
    # Nested contours of one panel (inner and outer edge): keep the largest box of each overlap.
    order = np.argsort(-(out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1]))
    keep: list[int] = []
    for i in order:
        b = out[i]
        if any(b[0] >= out[k, 0] - 4 and b[1] >= out[k, 1] - 4 and b[2] <= out[k, 2] + 4 and b[3] <= out[k, 3] + 4
               for k in keep):
            continue
        keep.append(int(i))
    return out[keep]
