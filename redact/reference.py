"""Reference frames: real pictures with known private objects that every detector must find.

A detector is only trusted after it has found what these frames hold (`redact.proof`). Each class
registers a provider of reference frames and, optionally, a small canary patch that the stage runs
through the detector on a schedule while it works:

    register("text", frames=lambda: [Reference("text", "sign", image, ((x1, y1, x2, y2),))],
             canary=lambda: Reference("text", "canary", patch, ((...),)))

Faces ship here: scikit-image's public-domain `astronaut` photo (a real face; nothing is downloaded)
at three sizes (faces ~30, ~60 and ~115 px high) on a textured background, and a 96×96 canary patch;
persons: the same photo's head and shoulders; text: two rendered signs (no canary for these two: the
forms' schedule runs them every few frames and proves them at load).
Images are BGR uint8; boxes are in image pixels. Frames are built once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Reference:
    cls: str
    name: str
    image: np.ndarray  # BGR uint8, sides multiples of 32
    boxes: tuple[tuple[float, float, float, float], ...]  # every object of `cls` in the image


_frames: dict[str, Callable[[], list[Reference]]] = {}
_canaries: dict[str, Callable[[], Reference]] = {}
_cache: dict[tuple[str, str], object] = {}
_lock = threading.Lock()


def register(cls: str, frames: Callable[[], list[Reference]], canary: Callable[[], Reference] | None = None) -> None:
    """Make `cls` provable: detectors of it must find every box of `frames()` to be loaded."""
    with _lock:
        _frames[cls] = frames
        if canary is not None:
            _canaries[cls] = canary
        _cache.pop((cls, "frames"), None)
        _cache.pop((cls, "canary"), None)


def classes() -> list[str]:
    with _lock:
        return sorted(_frames)


def frames(cls: str) -> list[Reference]:
    """The reference frames of `cls` ([] if none are registered)."""
    with _lock:
        provider = _frames.get(cls)
        hit = _cache.get((cls, "frames"))
    if provider is None:
        return []
    if hit is None:
        hit = provider()
        with _lock:
            _cache[(cls, "frames")] = hit
    return list(hit)  # type: ignore[call-overload]


def canary(cls: str) -> Reference | None:
    """The canary patch of `cls`, or None."""
    with _lock:
        provider = _canaries.get(cls)
        hit = _cache.get((cls, "canary"))
    if provider is None:
        return None
    if hit is None:
        hit = provider()
        with _lock:
            _cache[(cls, "canary")] = hit
    return hit  # type: ignore[return-value]


# -- faces: the astronaut ----------------------------------------------------------------------------
_HEAD_CROP = (slice(10, 250), slice(110, 320))  # rows, cols of skimage's astronaut: head and shoulders
_FACE_IN_CROP = (58 / 210, 50 / 240, 152 / 210, 165 / 240)  # x1, y1, x2, y2 as fractions of the crop


def _head() -> np.ndarray:
    from capture.scene import skimage_picture  # the photo ships inside scikit-image

    photo = skimage_picture("astronaut.png")  # BGR, without skimage.data's scipy/PIL imports (~45 MB of RSS)
    if photo is None:
        from skimage import data

        photo = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    return np.ascontiguousarray(photo[_HEAD_CROP])  # 210×240


def _background(w: int, h: int, seed: int) -> np.ndarray:
    """Mid-grey with soft blocks and noise: not a blank page, nothing face-like."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 120, np.uint8)
    for _ in range(12):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        c = tuple(int(v) for v in rng.integers(60, 200, 3))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 60)), y + int(rng.integers(10, 60))), c, -1)
    noise = rng.integers(-8, 9, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _paste_head(canvas: np.ndarray, head: np.ndarray, x: int, y: int, height: int,
                mirror: bool = False) -> tuple[float, float, float, float]:
    width = round(height * head.shape[1] / head.shape[0])
    img = cv2.resize(head, (width, height), interpolation=cv2.INTER_AREA)
    fx1, fy1, fx2, fy2 = _FACE_IN_CROP
    if mirror:
        img = np.ascontiguousarray(img[:, ::-1])
        fx1, fx2 = 1 - fx2, 1 - fx1
    canvas[y:y + height, x:x + width] = img
    return (x + fx1 * width, y + fy1 * height, x + fx2 * width, y + fy2 * height)


def face_frames() -> list[Reference]:
    head = _head()
    canvas = _background(448, 256, seed=16)
    boxes = (_paste_head(canvas, head, 8, 150, 64), _paste_head(canvas, head, 72, 60, 128, mirror=True),
             _paste_head(canvas, head, 220, 8, 240))
    return [Reference("face", "astronaut-3-sizes", canvas, boxes)]


def face_canary() -> Reference:
    canvas = _background(96, 96, seed=17)
    box = _paste_head(canvas, _head(), 12, 0, 96)
    return Reference("face", "astronaut-canary", canvas, (box,))


register("face", face_frames, face_canary)


def person_frames() -> list[Reference]:
    """The astronaut's head and shoulders (a real photo) as a person, at one size."""
    canvas = _background(448, 256, seed=21)
    canvas[16:240, 20:216] = cv2.resize(_head(), (196, 224), interpolation=cv2.INTER_AREA)
    return [Reference("person", "astronaut-person", canvas, ((20.0, 16.0, 216.0, 240.0),))]


def text_frames() -> list[Reference]:
    """Two signs: dark lines on light boards, two fonts and sizes."""
    canvas = _background(448, 256, seed=22)
    boxes = []
    for (x0, y0, x1, y1), text, font, scale, org in (
            ((20, 30, 300, 90), "EXIT 42", cv2.FONT_HERSHEY_SIMPLEX, 1.5, (30, 78)),
            ((60, 150, 420, 230), "Main Street 7", cv2.FONT_HERSHEY_DUPLEX, 1.2, (70, 205))):
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (245, 245, 245), -1)
        cv2.putText(canvas, text, org, font, scale, (15, 15, 15), 3 if scale > 1.3 else 2)
        (w, h), base = cv2.getTextSize(text, font, scale, 3 if scale > 1.3 else 2)
        boxes.append((float(org[0]), float(org[1] - h), float(org[0] + w), float(org[1] + base)))
    return [Reference("text", "signs", canvas, tuple(boxes))]


register("person", person_frames)
register("text", text_frames)


def covered(truth: tuple[float, float, float, float], boxes: np.ndarray, min_overlap: float = 0.3) -> bool:
    """A known object counts as found when a detected box holds its centre and covers ≥ `min_overlap`
    of it (the same rule as the model-update self-test)."""
    if not len(boxes):
        return False
    b = np.asarray(boxes, np.float64)[:, :4]
    cx, cy = (truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2
    area = max(1e-6, (truth[2] - truth[0]) * (truth[3] - truth[1]))
    inside = (b[:, 0] <= cx) & (cx <= b[:, 2]) & (b[:, 1] <= cy) & (cy <= b[:, 3])
    iw = np.clip(np.minimum(truth[2], b[:, 2]) - np.maximum(truth[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(truth[3], b[:, 3]) - np.maximum(truth[1], b[:, 1]), 0, None)
    return bool((inside & (iw * ih / area >= min_overlap)).any())
