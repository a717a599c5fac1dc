"""Screens (monitors, phones, laptops showing content): bright rectangles with text in them.

No screen model ships in any wheel we may use, so a screen is found from what it looks like: a
bright blob (text strokes closed over) that fills its rotated bounding rectangle (a panel seen in
perspective), lit brighter than the ring around it, with at least two detected text lines inside;
or, when the lit blob touches other bright things (no rectangle), a lit rectangle grown from
dark-on-light lines on a lit background and brighter than the ring around it; or, in dark mode, a dark rectangle grown from light-on-dark text lines, holding at least two of them
(its bezel is as dark as it, so no ring test: the lines' polarity is what tells it from a dark car
body around a plate). Paper under bright light is its known false alarm. Runs on a 320-px-wide grey copy
(~1-2 ms). Measured in `python -m bench redact_forms` (recall on synthetic screens, false alarms on
the scene's documents and signs).
"""

from __future__ import annotations

import cv2
import numpy as np

from redact.nms import iou_matrix

WORK_WIDTH = 320
MIN_AREA = 0.006  # of the frame
MIN_LINES = 2  # text lines inside
BRIGHTER = 1.15  # mean inside / mean of the surrounding ring
BRIGHT_LEVEL = 225  # grey level of a lit panel (paper and white clothes under room light stay below)
RECTANGULAR = 0.8  # contour area / its min-area rectangle
DARK_LEVEL = 60  # grey level of a dark-mode panel's background (dark themes are ~20-50)
DARK_STROKE = 140  # a light-on-dark line's brightest 5 % reach this
PANEL_EDGE = 0.9  # a grown panel grows while this share of its new edge is panel (or its text)
LIT_STROKE = 140  # a dark-on-light line's darkest 5 % reach this
EMITTING = 247  # grown lit panels: a panel that emits light sits at the top of the sensor's range; paper
                # lit by the room stays below (synthetic scene: 250 vs 243; tuned there, not on real photos)


def find_screens(color: np.ndarray, text_boxes: np.ndarray) -> np.ndarray:
    """Screen boxes N×5 (x1, y1, x2, y2, score) in frame pixels; text_boxes N×≥4 in frame pixels."""
    if not len(text_boxes):
        return np.zeros((0, 5))
    h, w = color.shape[:2]
    s = WORK_WIDTH / w
    gray = cv2.cvtColor(cv2.resize(color, (WORK_WIDTH, max(1, round(h * s))), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_BGR2GRAY)
    tb = text_boxes[:, :4] * s
    tc = np.stack([(tb[:, 0] + tb[:, 2]) / 2, (tb[:, 1] + tb[:, 3]) / 2], 1)
    boxes = [b for b in (_lit(gray, c, tc) for c in _panels(gray >= BRIGHT_LEVEL)) if b is not None]
    boxes += _lit_grown(gray, tb, tc, boxes)
    boxes += _dark_screens(gray, tb, tc)
    return np.array(boxes) / np.array([s, s, s, s, 1.0]) if boxes else np.zeros((0, 5))


def _panels(mask: np.ndarray) -> list[np.ndarray]:
    """Contours of solid, rectangular blobs of `mask` (text strokes closed over, thin bridges cut)."""
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    gh, gw = mask.shape
    out = []
    for c in contours:
        area = cv2.contourArea(c)
        if area < MIN_AREA * gh * gw or area > 0.9 * gh * gw:
            continue
        (_, _), (rw, rh), _ = cv2.minAreaRect(c)
        # A panel is a (perspective) rectangle: it fills most of its rotated bounding box.
        if min(rw, rh) < 6 or not 0.25 <= rw / max(rh, 1e-6) <= 4.0 or area / max(rw * rh, 1e-6) < RECTANGULAR:
            continue
        out.append(c)
    return out


def _inside(c: np.ndarray, tc: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
    x, y, bw, bh = cv2.boundingRect(c)
    return (x, y, bw, bh), (tc[:, 0] > x) & (tc[:, 0] < x + bw) & (tc[:, 1] > y) & (tc[:, 1] < y + bh)


def _lit(gray: np.ndarray, c: np.ndarray, tc: np.ndarray) -> list[float] | None:
    """A lit panel: at least MIN_LINES text lines inside, brighter than the ring around it."""
    (x, y, bw, bh), inside = _inside(c, tc)
    if inside.sum() < MIN_LINES:  # a label, a plate or a bib has one line; a screen shows several
        return None
    pad = max(3, int(0.15 * max(bw, bh)))
    ring = gray[max(0, y - pad):y + bh + pad, max(0, x - pad):x + bw + pad].astype(np.float64)
    inner = gray[y:y + bh, x:x + bw].astype(np.float64)
    ring_mean = (ring.sum() - inner.sum()) / max(ring.size - inner.size, 1)
    ratio = inner.mean() / max(ring_mean, 1.0)
    if ratio < BRIGHTER:
        return None
    return [x, y, x + bw, y + bh, min(1.0, 0.5 + 0.25 * (ratio - 1.0))]


def _dark_screens(gray: np.ndarray, tb: np.ndarray, tc: np.ndarray) -> list[list[float]]:
    """Dark-mode panels: from each light-on-dark text line — its background (median) dark, its strokes
    bright — a rectangle grown side by side while its new edge is panel (dark, or another such line:
    a dark bezel is taken in too); one that holds at least MIN_LINES of those lines is a screen. A dark
    car body around a (light) plate, or a shadow over a printed page, holds dark-on-light lines only.
    Grown rather than found as a blob: dark areas (hair, shadows, clothes) touch a dark panel far more
    often than bright ones touch a lit one."""
    ok = np.zeros(len(tb), bool)
    for k, (x1, y1, x2, y2) in enumerate(tb):
        line = gray[max(0, int(y1)):int(np.ceil(y2)), max(0, int(x1)):int(np.ceil(x2))]
        ok[k] = bool(line.size) and np.median(line) <= DARK_LEVEL + 25 and np.percentile(line, 95) >= DARK_STROKE
    return _grown(gray <= DARK_LEVEL, tb, tc, ok, 0.6)


def _lit_grown(gray: np.ndarray, tb: np.ndarray, tc: np.ndarray, found: list[list[float]]) -> list[list[float]]:
    """Lit panels that touch other bright things (a page, another sign: their blob is no rectangle):
    grown as dark-mode panels are, from dark-on-light lines on a background that emits light (EMITTING)
    not inside a screen found already, while the new edge is lit; then brighter than the ring around."""
    ok = np.zeros(len(tb), bool)
    for k, (x1, y1, x2, y2) in enumerate(tb):
        line = gray[max(0, int(y1)):int(np.ceil(y2)), max(0, int(x1)):int(np.ceil(x2))]
        ok[k] = bool(line.size) and np.median(line) >= EMITTING and np.percentile(line, 5) <= LIT_STROKE
    for b in found:
        ok &= ~((tc[:, 0] > b[0]) & (tc[:, 0] < b[2]) & (tc[:, 1] > b[1]) & (tc[:, 1] < b[3]))
    out = []
    for box in _grown(gray >= EMITTING, tb, tc, ok, 0.5):
        x1, y1, x2, y2 = (int(v) for v in box[:4])
        lit = _lit(gray, np.array([[[x1, y1]], [[x2 - 1, y1]], [[x2 - 1, y2 - 1]], [[x1, y2 - 1]]], np.int32),
                   tc[ok])
        if lit is not None:
            out.append(lit)
    return out


def _grown(panel_mask: np.ndarray, tb: np.ndarray, tc: np.ndarray, ok: np.ndarray, score: float) -> list[list[float]]:
    """Rectangles grown from each line `ok` while PANEL_EDGE of the new edge is panel (`panel_mask`, or
    such a line), holding at least MIN_LINES of them, of a screen's size and shape."""
    if ok.sum() < MIN_LINES:
        return []
    gh, gw = panel_mask.shape
    panel = panel_mask.astype(np.uint8)
    for x1, y1, x2, y2 in tb[ok]:
        panel[max(0, int(y1)):int(np.ceil(y2)), max(0, int(x1)):int(np.ceil(x2))] = 1
    ii = cv2.integral(panel)

    def share(xa: int, ya: int, xb: int, yb: int) -> float:
        return float(ii[yb, xb] - ii[ya, xb] - ii[yb, xa] + ii[ya, xa]) / max((xb - xa) * (yb - ya), 1)

    found: list[list[float]] = []
    for x1, y1, x2, y2 in tb[ok]:
        xa, ya = max(0, int(x1)), max(0, int(y1))
        xb, yb = min(gw, int(np.ceil(x2))), min(gh, int(np.ceil(y2)))
        grown = True
        while grown:
            grown = False
            if xa > 0 and share(xa - 1, ya, xa, yb) >= PANEL_EDGE:
                xa, grown = xa - 1, True
            if xb < gw and share(xb, ya, xb + 1, yb) >= PANEL_EDGE:
                xb, grown = xb + 1, True
            if ya > 0 and share(xa, ya - 1, xb, ya) >= PANEL_EDGE:
                ya, grown = ya - 1, True
            if yb < gh and share(xa, yb, xb, yb + 1) >= PANEL_EDGE:
                yb, grown = yb + 1, True
        inside = ok & (tc[:, 0] > xa) & (tc[:, 0] < xb) & (tc[:, 1] > ya) & (tc[:, 1] < yb)
        bw, bh = xb - xa, yb - ya
        if inside.sum() < MIN_LINES or bw * bh < MIN_AREA * gh * gw or not 0.25 <= bw / max(bh, 1) <= 4.0:
            continue
        box = [xa, ya, xb, yb, score]
        if not len(found) or iou_matrix(np.array([box[:4]], float), np.array(found, float)[:, :4]).max() < 0.7:
            found.append(box)  # the other lines of the same panel grow (nearly) the same rectangle
    return found
