"""Boxes held between a detector's passes: moved with the camera, aged, replaced by fresh ones.

A box the frame's edge cuts (within EDGE_FRACTION of it at its pass) stays anchored to that edge
while held: the part of the object beyond the edge may come into view before the next pass (a plate
entering the frame as the wearer turns) and must be covered as it does. A text line cut by the edge
is not read either when it reaches the edge (redact/schedule.py, within 2 px): its visible part is
a fragment that proves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from redact.nms import iou_matrix

MATCH_IOU = 0.2  # a fresh box this close to a held one replaces it
EDGE_FRACTION = 0.02  # of the frame's side: a box this close to an edge is cut by it


def edges(boxes: np.ndarray, width: int, height: int, within: float = -1.0) -> np.ndarray:
    """N×4 bool: whether each box (N×≥4) touches the left, top, right, bottom edge of the frame
    (within `within` pixels; default EDGE_FRACTION of the frame's side)."""
    ex, ey = (EDGE_FRACTION * width, EDGE_FRACTION * height) if within < 0 else (within, within)
    b = np.asarray(boxes, np.float64)
    if not len(b):
        return np.zeros((0, 4), bool)
    return np.stack([b[:, 0] <= ex, b[:, 1] <= ey, b[:, 2] >= width - ex, b[:, 3] >= height - ey], axis=1)


@dataclass
class Hold:
    """Held boxes of one detector or form: N×5 (x1, y1, x2, y2, score), frames since their pass, and
    the frame edges each was cut by at its pass (N×4: left, top, right, bottom)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    age: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cut: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), bool))

    def step(self, dx: float, dy: float, limit: int, width: int = 0, height: int = 0, frames: int = 1) -> None:
        """Moved by the camera's shift (dx, dy) since the last step, `frames` frames ago; boxes held
        longer than `limit` frames are dropped."""
        self.boxes[:, 0:4:2] += dx
        self.boxes[:, 1:4:2] += dy
        if width and height and len(self.boxes):  # cut boxes keep reaching the edge that cut them
            self.boxes[:, 0] = np.where(self.cut[:, 0], np.minimum(self.boxes[:, 0], 0.0), self.boxes[:, 0])
            self.boxes[:, 1] = np.where(self.cut[:, 1], np.minimum(self.boxes[:, 1], 0.0), self.boxes[:, 1])
            self.boxes[:, 2] = np.where(self.cut[:, 2], np.maximum(self.boxes[:, 2], width), self.boxes[:, 2])
            self.boxes[:, 3] = np.where(self.cut[:, 3], np.maximum(self.boxes[:, 3], height), self.boxes[:, 3])
        self.age += frames
        keep = self.age <= limit
        self.boxes, self.age, self.cut = self.boxes[keep], self.age[keep], self.cut[keep]

    def refresh(self, fresh: np.ndarray, width: int = 0, height: int = 0, add_only: bool = False) -> None:
        """A pass found `fresh`: those replace the held boxes they overlap; the rest stay held. With
        `add_only` (a pass over part of the frame: an edge strip) nothing held is replaced."""
        fresh = np.asarray(fresh, np.float64).reshape(-1, 5)
        if len(self.boxes) and len(fresh) and not add_only:
            stale = iou_matrix(self.boxes[:, :4], fresh[:, :4]).max(axis=1) < MATCH_IOU
            self.boxes, self.age, self.cut = self.boxes[stale], self.age[stale], self.cut[stale]
        cut = edges(fresh, width, height) if width and height else np.zeros((len(fresh), 4), bool)
        self.boxes = np.concatenate([self.boxes, fresh])
        self.age = np.concatenate([self.age, np.zeros(len(fresh), np.int64)])
        self.cut = np.concatenate([self.cut, cut])


class Exposed:
    """What came into view since a detector's last whole-frame pass, from the camera's shift: the
    content moved by the summed shift since then, so the pass saw none of the current frame outside
    its footprint — a strip along each edge the content moved away from (left when it moved right)."""

    def __init__(self) -> None:
        self.shift = np.zeros(2)

    def reset(self) -> None:
        self.shift = np.zeros(2)

    def step(self, dx: float, dy: float) -> None:
        self.shift += (dx, dy)

    def strips(self, width: int, height: int, margin: int, min_side: int = 4) -> list[tuple[int, int, int, int]]:
        """(x0, y0, w, h) of the strips not seen by the last pass, each grown by `margin` into the frame
        (a line the strip's inner border cuts is found whole); strips narrower than `min_side` are left
        out (held boxes' growing margins cover that)."""
        sx, sy = self.shift
        out = []
        for along_x, amount, start in ((True, sx, True), (True, -sx, False), (False, sy, True), (False, -sy, False)):
            if amount < min_side:
                continue
            side = width if along_x else height
            n = min(side, int(np.ceil(amount)) + margin)
            o = 0 if start else side - n
            out.append((o, 0, n, height) if along_x else (0, o, width, n))
        return out
