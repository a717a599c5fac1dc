"""Hard faces for the synthetic source and the bench: real face photos, small, turned, tilted, covered,
in the dark, motion-blurred, and in crowds — pasted onto synthetic frames, with ground-truth boxes.

`hard_case(name, backgrounds)` → (frames, faces per frame). Cases (`CASES`):

  * `small_10_40`   — six faces 10–40 px wide, drifting;
  * `profile`       — yawed ~55–70°: the photos are frontal, so a turn is shown as its foreshortening
                      (the head squeezed to 35–55 % of its width); a real profile photo is harder still;
  * `tilted`        — rolled 25–45° in the image plane, both ways;
  * `occluded`      — 35–50 % of each face covered (a hand-coloured bar over the mouth, or one side);
  * `low_light`     — the frame at 15–25 % brightness with sensor noise (σ 4 levels);
  * `motion_blur`   — the frame smeared by a 15-px camera shake;
  * `crowd`         — 24 faces of 16–48 px at once, drifting.

Faces: scikit-image's `astronaut` (NASA, public domain), matplotlib's Grace Hopper portrait (US Navy,
public domain; shipped in tests/data/faces/) and scikit-image's LFW crops (in crowds). A truth box is
the face (brow to chin, ear to ear) after the same transform: for a roll, the box around the rotated
face ellipse. Deterministic.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

CASES = ("small_10_40", "profile", "tilted", "occluded", "low_light", "motion_blur", "crowd")
_PHOTO_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "faces"


@lru_cache(maxsize=1)
def sources() -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
    """(head-and-shoulders BGR crop, face box in it) for each real photo."""
    import skimage.data

    out = []
    astro = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    out.append(_head(astro, (168.0, 55.0, 252.0, 165.0)))
    hopper = cv2.imread(str(_PHOTO_DIR / "grace_hopper.jpg"))
    if hopper is not None:
        out.append(_head(hopper, (185.0, 110.0, 345.0, 320.0)))
    lfw = skimage.data.lfw_subset()[:100]
    for f in lfw[::7]:  # 15 identities: tight 25×25 grey crops, the face fills ~80 % of them
        img = cv2.cvtColor((f * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        out.append((cv2.resize(img, (75, 75), interpolation=cv2.INTER_CUBIC), (9.0, 9.0, 66.0, 70.0)))
    return out


def _head(img: np.ndarray, face: tuple[float, float, float, float]) -> tuple[np.ndarray, tuple[float, ...]]:
    x1, y1, x2, y2 = face
    w, h = x2 - x1, y2 - y1
    cx1, cy1 = int(max(0, x1 - 0.5 * w)), int(max(0, y1 - 0.45 * h))
    cx2, cy2 = int(min(img.shape[1], x2 + 0.5 * w)), int(min(img.shape[0], y2 + 0.5 * h))
    return np.ascontiguousarray(img[cy1:cy2, cx1:cx2]), (x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1)


def paste(color: np.ndarray, src: tuple[np.ndarray, tuple[float, ...]], cx: float, cy: float, face_w: float,
          squeeze: float = 1.0, roll: float = 0.0) -> list[float] | None:
    """Paste a head so its face is `face_w` px wide (× `squeeze` horizontally), centred at (cx, cy),
    rolled by `roll` degrees. Returns the face's truth box, or None if it does not fit in the frame."""
    img, (fx1, fy1, fx2, fy2) = src
    s = face_w / (fx2 - fx1)
    sx, sy = s * squeeze, s
    # affine: head pixel → frame pixel (scale, then rotate about the face centre, then move there)
    fcx, fcy = (fx1 + fx2) / 2, (fy1 + fy2) / 2
    a = np.deg2rad(roll)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lin = rot @ np.diag([sx, sy])
    off = np.array([cx, cy]) - lin @ np.array([fcx, fcy])
    m = np.hstack([lin, off[:, None]]).astype(np.float32)
    h, w = color.shape[:2]
    corners = np.array([[0, 0], [img.shape[1], 0], [img.shape[1], img.shape[0]], [0, img.shape[0]]], np.float32)
    pts = corners @ m[:, :2].T + m[:, 2]
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int)
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        return None
    m2 = m.copy()
    m2[:, 2] -= (x0, y0)
    patch = cv2.warpAffine(img, m2, (x1 - x0, y1 - y0), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
    inside = cv2.warpAffine(np.full(img.shape[:2], 255, np.uint8), m2, (x1 - x0, y1 - y0), flags=cv2.INTER_NEAREST)
    np.copyto(color[y0:y1, x0:x1], patch, where=inside[..., None] > 0)
    # the face ellipse (semi-axes a, b) rotated by roll: its bounding box
    ea, eb = (fx2 - fx1) * sx / 2, (fy2 - fy1) * sy / 2
    hw = np.hypot(ea * np.cos(a), eb * np.sin(a))
    hh = np.hypot(ea * np.sin(a), eb * np.cos(a))
    return [cx - hw, cy - hh, cx + hw, cy + hh]


def _layout(rng: np.random.Generator, n: int, w: int, h: int, margin: int = 60) -> np.ndarray:
    """n well-spread centres (a jittered grid)."""
    cols = int(np.ceil(np.sqrt(n * w / h)))
    rows = int(np.ceil(n / cols))
    gx = (np.arange(cols) + 0.5) * (w - 2 * margin) / cols + margin
    gy = (np.arange(rows) + 0.5) * (h - 2 * margin) / rows + margin
    pts = np.array([(x, y) for y in gy for x in gx])[:n]
    return pts + rng.uniform(-8, 8, pts.shape)


def hard_case(name: str, backgrounds: list[Any], seed: int = 0) -> tuple[list[Any], list[list[list[float]]]]:
    """Frames (copies of `backgrounds` with faces pasted) and the visible faces' truth boxes per frame."""
    if name not in CASES:
        raise ValueError(f"hard case: expected one of {', '.join(CASES)}, got {name!r}")
    rng = np.random.default_rng(seed + CASES.index(name))
    srcs = sources()
    big = srcs[:2]
    f0 = backgrounds[0].color
    h, w = f0.shape[:2]
    if name == "crowd":
        n = 24
        centres = _layout(rng, n, w, h, 40)
        widths = rng.uniform(16, 48, n)
        picks = [srcs[i % len(srcs)] for i in range(n)]
    elif name == "small_10_40":
        n = 6
        centres = _layout(rng, n, w, h, 50)
        widths = np.linspace(10, 40, n)
        picks = [big[i % len(big)] for i in range(n)]
    else:
        n = 4
        centres = _layout(rng, n, w, h, 110)
        widths = rng.uniform(55, 90, n)
        picks = [big[i % len(big)] for i in range(n)]
    vel = rng.uniform(-1.5, 1.5, (n, 2))
    squeeze = rng.uniform(0.35, 0.55, n) if name == "profile" else np.ones(n)
    roll = rng.choice([-1, 1], n) * rng.uniform(25, 45, n) if name == "tilted" else np.zeros(n)
    frames, truth = [], []
    for i, bg in enumerate(backgrounds):
        color = bg.color.copy()
        boxes = []
        for k in range(n):
            cx, cy = centres[k] + vel[k] * i
            box = paste(color, picks[k], cx, cy, widths[k], squeeze[k], roll[k])
            if box is None:
                continue
            boxes.append(box)
            if name == "occluded":
                x1, y1, x2, y2 = (int(round(v)) for v in box)
                if k % 2:  # a hand over mouth and chin
                    color[y1 + int(0.55 * (y2 - y1)):y2, x1:x2] = (120, 150, 200)
                else:  # one side hidden (a shoulder, a pillar)
                    color[y1:y2, x1:x1 + int(0.45 * (x2 - x1))] = (70, 70, 70)
        if name == "low_light":
            noise = rng.normal(0, 4, color.shape)
            color = np.clip(color * rng.uniform(0.15, 0.25) + noise, 0, 255).astype(np.uint8)
        elif name == "motion_blur":
            kernel = np.zeros((15, 15), np.float32)
            kernel[7, :] = 1 / 15
            kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D((7, 7), 20, 1), (15, 15))
            color = cv2.filter2D(color, -1, kernel / kernel.sum())
        frames.append(bg.replace(color=color))
        truth.append(boxes)
    return frames, truth
