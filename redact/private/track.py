"""Matched private objects followed between full searches: optical flow (KLT) near the last match.

    held = HeldObject(name, applies_to, outline, points, inliers)   # from a full search's match
    ok = held.follow(prev_gray, gray)   # True: moved by the flow's homography; False: blind (velocity)
    quad = held.quad(margin, growth_tracked, growth_blind)          # what is redacted on this frame

A full SIFT search costs 60-120 CPU-ms; following a match costs a few (~3.5 on a loaded 2-core box): flow of
points on the object (the search's inliers plus corners found inside the outline), inside the outline's
neighbourhood only, checked forward and backward, then a RANSAC homography moves the outline. The
redacted quad is the outline grown by the policy's margin plus a margin that grows with every frame
since the object was last matched by a search (a little while the flow holds, more when it is lost and
the outline only coasts on its last velocity). A follow that fails (too few points survive, an
implausible jump) says so: the matcher then searches the whole frame on the next frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

MIN_POINTS = 8  # flow points that must survive to trust a homography
MAX_POINTS = 48
FB_ERROR_PX = 1.0  # forward-backward disagreement beyond which a point is dropped
SEARCH_PX = 48  # the neighbourhood: outline's bounding box grown by this much (fast motion at 30 fps)
MAX_SCALE_STEP = 1.3  # one frame cannot change the outline's area by more than this factor (either way)

# 15×15 windows, 4 pyramid levels (motion up to ~100 px between processed frames: a busy device drops
# frames before redaction, so neighbours can be 7 captures apart), 10 iterations, 48 points: ~70 % of
# the CPU of 21×21 / 20 iterations / 80 points; 3 levels were cheaper but lost the demo's photo across
# such gaps (bench privacy, tests).
_LK = {"winSize": (15, 15), "maxLevel": 3,
       "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.05)}


def grow(quad: np.ndarray, fraction: float) -> np.ndarray:
    """The quad scaled about its centre so each side moves out by `fraction` of the quad's size."""
    centre = quad.mean(0)
    return (centre + (quad - centre) * (1.0 + 2.0 * fraction)).astype(np.float32)


def corners_inside(gray: np.ndarray, outline: np.ndarray, limit: int = MAX_POINTS) -> np.ndarray:
    """Up to `limit` trackable corners inside `outline` (N×2 frame pixels), from its bounding box only."""
    h, w = gray.shape
    x0, y0 = np.clip(np.floor(outline.min(0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(outline.max(0)).astype(int) + 1, 0, [w, h])
    if x1 - x0 < 8 or y1 - y0 < 8:
        return np.zeros((0, 2), np.float32)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(mask, np.round(outline - [x0, y0]).astype(np.int32), 255)
    pts = cv2.goodFeaturesToTrack(gray[y0:y1, x0:x1], limit, 0.01, 5, mask=mask, blockSize=5)
    if pts is None:
        return np.zeros((0, 2), np.float32)
    return (pts.reshape(-1, 2) + [x0, y0]).astype(np.float32)


@dataclass
class HeldObject:
    name: str
    applies_to: str
    outline: np.ndarray  # 4×2 frame pixels, no margin: the exemplar's outline where it is now
    points: np.ndarray  # N×2 frame pixels on the object, followed by flow
    inliers: int
    age: int = 0  # frames since a full search matched it (0 = matched on this frame)
    blind: int = 0  # consecutive frames the flow could not follow it (coasting on velocity)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))

    def quad(self, margin: float, growth_tracked: float, growth_blind: float) -> np.ndarray:
        """What to redact now: the outline grown by the margin and by its age (more while blind)."""
        return grow(self.outline, margin + growth_tracked * (self.age - self.blind) + growth_blind * self.blind)

    def follow(self, prev: np.ndarray, gray: np.ndarray) -> bool:
        """Move the outline from `prev` to `gray` (grey frames of one size). False: coasted blind."""
        self.age += 1
        moved = self._flow(prev, gray) if len(self.points) >= MIN_POINTS else None
        if moved is None:
            self.blind += 1
            self.outline = (self.outline + self.velocity).astype(np.float32)
            self.points = (self.points + self.velocity).astype(np.float32)
            return False
        outline, points = moved
        self.velocity = (outline.mean(0) - self.outline.mean(0)).astype(np.float32)
        self.outline, self.points, self.blind = outline, points, 0
        if len(self.points) < 2 * MIN_POINTS:  # keep enough to follow: re-seed inside the outline
            self.points = np.concatenate([self.points, corners_inside(gray, self.outline, MAX_POINTS)])[:MAX_POINTS]
        return True

    def _flow(self, prev: np.ndarray, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        h, w = gray.shape
        x0, y0 = np.clip(np.floor(self.outline.min(0)).astype(int) - SEARCH_PX, 0, [w, h])
        x1, y1 = np.clip(np.ceil(self.outline.max(0)).astype(int) + SEARCH_PX + 1, 0, [w, h])
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        off = np.array([x0, y0], np.float32)
        a, b = prev[y0:y1, x0:x1], gray[y0:y1, x0:x1]
        p0 = (self.points - off).reshape(-1, 1, 2).astype(np.float32)
        p1, st, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, **_LK)
        if p1 is None:
            return None
        back, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, **_LK)
        fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
        ok = (st.ravel() == 1) & (st2.ravel() == 1) & (fb < FB_ERROR_PX)
        if np.count_nonzero(ok) < MIN_POINTS:
            return None
        src, dst = p0.reshape(-1, 2)[ok] + off, p1.reshape(-1, 2)[ok] + off
        hom, inl = cv2.findHomography(src, dst, cv2.RANSAC, 3.0, maxIters=100, confidence=0.99)
        if hom is None or inl is None or int(inl.sum()) < MIN_POINTS:
            return None
        outline = cv2.perspectiveTransform(self.outline.reshape(-1, 1, 2), hom).reshape(4, 2).astype(np.float32)
        old, new = abs(cv2.contourArea(self.outline)), abs(cv2.contourArea(outline))
        if not np.all(np.isfinite(outline)) or not cv2.isContourConvex(outline.reshape(-1, 1, 2)) \
                or not 1 / MAX_SCALE_STEP <= new / max(old, 1e-6) <= MAX_SCALE_STEP:
            return None
        return outline, dst[inl.ravel() == 1].astype(np.float32)
