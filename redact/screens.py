"""Screens (monitors, phones, laptops showing content): bright rectangles with text in them.

No screen model ships in any wheel we may use, so a screen is found from what it looks like: a
bright blob (text strokes closed over) that fills its rotated bounding rectangle (a panel seen in
perspective), lit brighter than the ring around it, with at least two detected text lines inside.
Dark-mode screens and paper under bright light are its known misses and false alarms. Runs on a 320-px-wide grey copy
(~1-2 ms). Measured in `python -m bench redact_forms` (recall on synthetic screens, false alarms on
the scene's documents and signs).
"""

from __future__ import annotations

import cv2
import numpy as np

WORK_WIDTH = 320
MIN_AREA = 0.006  # of the frame
MIN_LINES = 2  # text lines inside
BRIGHTER = 1.15  # mean inside / mean of the surrounding ring
BRIGHT_LEVEL = 225  # grey level of a lit panel (paper and white clothes under room light stay below)
RECTANGULAR = 0.8  # contour area / its min-area rectangle


def find_screens(color: np.ndarray, text_boxes: np.ndarray) -> np.ndarray:
    """Screen boxes N×5 (x1, y1, x2, y2, score) in frame pixels; text_boxes N×≥4 in frame pixels."""
    if not len(text_boxes):
        return np.zeros((0, 5))
    h, w = color.shape[:2]
    s = WORK_WIDTH / w
    gray = cv2.cvtColor(cv2.resize(color, (WORK_WIDTH, max(1, round(h * s))), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_BGR2GRAY)
    # Lit panels: bright pixels, their text strokes closed over, as solid blobs.
    bright = (gray >= BRIGHT_LEVEL).astype(np.uint8)
    bright = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))  # cut thin bridges
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    gh, gw = gray.shape
    min_area = MIN_AREA * gh * gw
    tc = np.stack([(text_boxes[:, 0] + text_boxes[:, 2]) / 2, (text_boxes[:, 1] + text_boxes[:, 3]) / 2], 1) * s
    found = []
    for c in contours:
        area = cv2.contourArea(c)
        if area < min_area or area > 0.9 * gh * gw:
            continue
        (_, _), (rw, rh), _ = cv2.minAreaRect(c)
        # A panel is a (perspective) rectangle: it fills most of its rotated bounding box.
        if min(rw, rh) < 6 or not 0.25 <= rw / max(rh, 1e-6) <= 4.0 or area / max(rw * rh, 1e-6) < RECTANGULAR:
            continue
        x, y, bw, bh = cv2.boundingRect(c)
        inside = (tc[:, 0] > x) & (tc[:, 0] < x + bw) & (tc[:, 1] > y) & (tc[:, 1] < y + bh)
        if inside.sum() < MIN_LINES:  # a label, a plate or a bib has one line; a screen shows several
            continue
        pad = max(3, int(0.15 * max(bw, bh)))
        ring = gray[max(0, y - pad):y + bh + pad, max(0, x - pad):x + bw + pad].astype(np.float64)
        inner = gray[y:y + bh, x:x + bw].astype(np.float64)
        ring_mean = (ring.sum() - inner.sum()) / max(ring.size - inner.size, 1)
        ratio = inner.mean() / max(ring_mean, 1.0)
        if ratio < BRIGHTER:
            continue
        found.append([x / s, y / s, (x + bw) / s, (y + bh) / s, min(1.0, 0.5 + 0.25 * (ratio - 1.0))])
    return np.array(found) if found else np.zeros((0, 5))
