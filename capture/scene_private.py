"""The wearer's private things in the synthetic world: exemplar photos, held-out views of them, and props.

`exemplar(name)` is the photo a wearer would register (public-domain pictures that ship inside
scikit-image: nothing is downloaded). `object_view(background, texture, rng)` renders the object as
a planar picture at a new 3D pose, distance and lighting onto a frame, with its ground-truth outline:
the held-out views `bench privacy` and the tests score matching on. `add_props(quads)` puts a
registered "family photo" on the synthetic room's back wall for the demo walk.
"""

from __future__ import annotations

import cv2
import numpy as np

# name → scikit-image picture; the first two are registered in tests/bench, the rest are distractors.
EXEMPLARS = {"family-photo": "chelsea", "coffee-poster": "coffee", "rocket": "rocket",
             "colorwheel": "colorwheel", "motorcycle": "stereo_motorcycle"}


def exemplar(name: str) -> np.ndarray:
    """The BGR photo of a synthetic private object."""
    from capture.scene import skimage_picture

    if EXEMPLARS[name] in ("chelsea", "coffee"):  # PNGs read directly: no scipy/PIL in the device process
        img = skimage_picture(f"{EXEMPLARS[name]}.png")
        if img is not None:
            return img
    from skimage import data

    img = getattr(data, EXEMPLARS[name])()
    if isinstance(img, tuple):
        img = img[0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3][..., ::-1])


def object_view(background: np.ndarray, texture: np.ndarray, rng: np.random.Generator, *,
                fx: float = 525.0) -> tuple[np.ndarray, np.ndarray]:
    """(frame, outline 4×2) of `texture` as a planar picture 0.6-2.5 m away, turned up to ±55° about
    two axes and rolled ±25°, under different light (gain, offset, gamma), slightly blurred and noisy."""
    h, w = background.shape[:2]
    th, tw = texture.shape[:2]
    width_m = float(rng.uniform(0.25, 0.5))
    height_m = width_m * th / tw
    dist = float(rng.uniform(0.6, 2.5))
    yaw, pitch, roll = np.deg2rad(rng.uniform(-55, 55)), np.deg2rad(rng.uniform(-40, 40)), np.deg2rad(rng.uniform(-25, 25))
    rot = cv2.Rodrigues(np.array([pitch, yaw, roll]))[0]
    local = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]]) * [width_m, height_m, 0]
    centre = np.array([rng.uniform(-0.25, 0.25) * dist, rng.uniform(-0.2, 0.2) * dist, dist])
    cam = local @ rot.T + centre
    uv = np.stack([fx * cam[:, 0] / cam[:, 2] + (w - 1) / 2, fx * cam[:, 1] / cam[:, 2] + (h - 1) / 2], 1)
    src = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float32)
    hom = cv2.getPerspectiveTransform(src, uv.astype(np.float32))
    lit = texture.astype(np.float32) / 255.0
    lit = np.clip(lit ** rng.uniform(0.7, 1.4) * rng.uniform(0.55, 1.3) + rng.uniform(-0.1, 0.1), 0, 1)
    warped = cv2.warpPerspective((lit * 255).astype(np.uint8), hom, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((th, tw), 255, np.uint8), hom, (w, h), flags=cv2.INTER_NEAREST) > 127
    out = background.copy()
    out[mask] = warped[mask]
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (3, 3), rng.uniform(0.3, 1.0))
    noise = rng.normal(0, 3.0, out.shape)
    out = np.clip(out + noise, 0, 255).astype(np.uint8)
    return out, uv.astype(np.float32)


def add_props(quads: list, quad_type: type) -> None:
    """A framed family photo (registered as `family-photo` in the demo) on the room's back wall, right
    of centre and above the people's heads, so it occludes nobody."""
    tex = exemplar("family-photo")
    width = 1.2
    height = width * tex.shape[0] / tex.shape[1]
    quads.append(quad_type(np.array([0.7, -1.0, 6.98]), np.array([width, 0, 0]), np.array([0, height, 0]), tex))
