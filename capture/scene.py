"""A procedural 3D scene of textured quads, rendered to aligned RGB-D by planar homographies.

The room (floor, walls, ceiling), boxes on the floor and "people" — billboards carrying a real face
photo (scikit-image's public-domain `astronaut`) — are all planar quads kept in front of the camera's
path, so each renders exactly: the texture by a perspective warp, the depth from the plane equation,
visibility by a z-buffer. Cost scales with the pixels each quad covers (its bounding rectangle only).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from capture.frame import Intrinsics

_NEAR = 0.05  # metres; quads with a corner closer than this to the camera plane are skipped


@dataclass
class Quad:
    origin: np.ndarray  # world position of texture pixel (0, 0)
    right: np.ndarray  # world vector along the texture's x axis (full width)
    down: np.ndarray  # world vector along the texture's y axis (full height)
    texture: np.ndarray  # h×w×3 uint8 BGR
    face_rect: tuple[float, float, float, float] | None = None  # (x1, y1, x2, y2) fraction of texture

    def corners(self, rect: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)) -> np.ndarray:
        x1, y1, x2, y2 = rect
        o, r, d = self.origin, self.right, self.down
        return np.array([o + x1 * r + y1 * d, o + x2 * r + y1 * d, o + x2 * r + y2 * d, o + x1 * r + y2 * d])


def _texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Smooth colour field plus random rectangles and discs: enough texture for tracking."""
    low = rng.integers(40, 220, size=(6, 6, 3), dtype=np.uint8)
    tex = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(28):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(6, size // 5, 2))
        if rng.random() < 0.5:
            cv2.rectangle(tex, (x, y), (x + w, y + h), colour, -1)
        else:
            cv2.circle(tex, (x, y), w // 2, colour, -1)
    noise = rng.integers(-12, 13, size=tex.shape, dtype=np.int16)
    return np.clip(tex.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def skimage_picture(filename: str) -> np.ndarray | None:
    """BGR pixels of a picture that ships inside scikit-image (`skimage/data/FILENAME`), read with
    OpenCV; None if it is not there. `skimage.data.astronaut()` imports scipy, imageio and PIL to read
    the same PNG: ~45 MB of the device's resident memory for two pictures."""
    spec = importlib.util.find_spec("skimage")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    img = cv2.imread(str(Path(list(spec.submodule_search_locations)[0]) / "data" / filename), cv2.IMREAD_COLOR)
    return img


def _face_texture(variant: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Head-and-shoulders crop of the astronaut photo and where the face is in it (fractions)."""
    photo = skimage_picture("astronaut.png")  # the photo ships inside scikit-image; nothing is downloaded
    if photo is None:
        from skimage import data

        photo = np.ascontiguousarray(data.astronaut()[..., ::-1])  # RGB → BGR
    crop = np.ascontiguousarray(photo[10:250, 110:320])  # 210×240
    face = (58 / 210, 50 / 240, 152 / 210, 165 / 240)
    if variant % 2:
        crop = np.ascontiguousarray(crop[:, ::-1])
        face = (1 - face[2], face[1], 1 - face[0], face[3])
    if variant % 3 == 2:  # a different skin/lighting tone
        crop = cv2.convertScaleAbs(crop, alpha=0.8, beta=10)
    return crop, face


def _yaw(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def build_scene(seed: int, text: bool = True) -> list[Quad]:
    """The room, two boxes and five people, deterministic by `seed`. World axes: x right, y down, z ahead."""
    rng = np.random.default_rng(seed)
    q: list[Quad] = []

    def add(o: list[float], r: list[float], d: list[float], tex: np.ndarray | None = None,
            face: tuple[float, float, float, float] | None = None) -> None:
        q.append(Quad(np.array(o, float), np.array(r, float), np.array(d, float),
                      _texture(rng) if tex is None else tex, face))

    add([-3.0, -1.3, 7.0], [6.0, 0, 0], [0, 2.8, 0])  # back wall
    add([-3.0, 1.5, 1.2], [6.0, 0, 0], [0, 0, 5.8])  # floor
    add([-3.0, -1.3, 1.2], [6.0, 0, 0], [0, 0, 5.8])  # ceiling
    add([-3.0, -1.3, 1.2], [0, 0, 5.8], [0, 2.8, 0])  # left wall
    add([3.0, -1.3, 7.0], [0, 0, -5.8], [0, 2.8, 0])  # right wall
    for x0, x1, y0, z0, z1 in ((1.1, 1.7, 0.9, 2.2, 2.8), (-2.0, -1.2, 1.0, 3.2, 4.0)):  # boxes on the floor
        add([x0, y0, z0], [x1 - x0, 0, 0], [0, 1.5 - y0, 0])  # front
        add([x0, y0, z1], [x1 - x0, 0, 0], [0, 0, z0 - z1])  # top
        add([x0, y0, z1], [0, 0, z0 - z1], [0, 1.5 - y0, 0])  # left side
        add([x1, y0, z0], [0, 0, z1 - z0], [0, 1.5 - y0, 0])  # right side
    people = ((-0.55, -0.05, 1.7, 0.0, 0.42), (0.95, -0.15, 2.7, 35.0, 0.45), (-1.35, 0.0, 3.9, -30.0, 0.45),
              (0.25, 0.15, 5.2, 0.0, 0.48), (1.7, 0.05, 4.6, -20.0, 0.45))
    for i, (x, y, z, yaw, width) in enumerate(people):
        tex, face = _face_texture(i)
        right = _yaw(yaw) @ np.array([width, 0, 0])
        height = width * tex.shape[0] / tex.shape[1]
        centre = np.array([x, y, z])
        add(list(centre - right / 2 - np.array([0, height / 2, 0])), list(right), [0, height, 0], tex, face)
    if text:
        from capture.scene_text import text_objects  # signs, a document, a screen, a bib, plates (with truth)

        q.extend(text_objects())
    return q


class Renderer:
    """Renders a list of quads from a camera pose to (BGR colour, depth in metres, quad id per pixel)."""

    def __init__(self, quads: list[Quad], intr: Intrinsics, background: int = 60) -> None:
        self.quads = quads
        self.intr = intr
        self.background = background
        w, h = intr.width, intr.height
        self._ray_x = ((np.arange(w, dtype=np.float32) - intr.cx) / intr.fx)[None, :]
        self._ray_y = ((np.arange(h, dtype=np.float32) - intr.cy) / intr.fy)[:, None]
        self._tex_corners = [
            np.array([[0, 0], [t.shape[1], 0], [t.shape[1], t.shape[0]], [0, t.shape[0]]], np.float32)
            for t in (qd.texture for qd in quads)
        ]

    def project(self, pts_world: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pixel coords N×2, camera z N) of world points seen from camera-to-world `pose`."""
        rot, pos = pose[:3, :3], pose[:3, 3]
        pc = (pts_world - pos) @ rot  # = R^T (X - t) for each row
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([self.intr.fx * pc[:, 0] / z + self.intr.cx, self.intr.fy * pc[:, 1] / z + self.intr.cy], 1)
        return uv, z

    def render(self, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h = self.intr.width, self.intr.height
        color = np.full((h, w, 3), self.background, np.uint8)
        zbuf = np.full((h, w), np.inf, np.float32)
        ids = np.full((h, w), 255, np.uint8)
        rot = pose[:3, :3]
        for qid, quad in enumerate(self.quads):
            corners = quad.corners()
            uv, z = self.project(corners, pose)
            if np.any(z < _NEAR):
                continue
            x0, y0 = np.floor(uv.min(0)).astype(int)
            x1, y1 = np.ceil(uv.max(0)).astype(int)
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1 + 1, w), min(y1 + 1, h)
            if x1 <= x0 or y1 <= y0:
                continue
            rw, rh = x1 - x0, y1 - y0
            # Plane n·X = d in camera coordinates → depth along each pixel's ray (affine in u, v).
            normal_c = np.cross(quad.right, quad.down) @ rot
            dist = float(normal_c @ ((corners[0] - pose[:3, 3]) @ rot))
            denom = normal_c[0] * self._ray_x[:, x0:x1] + (normal_c[1] * self._ray_y[y0:y1] + normal_c[2])
            with np.errstate(divide="ignore"):
                zq = (dist / denom).astype(np.float32)
            mask = np.zeros((rh, rw), np.uint8)
            cv2.fillConvexPoly(mask, np.round((uv - [x0, y0]) * 16).astype(np.int32), 1, cv2.LINE_8, 4)
            zroi = zbuf[y0:y1, x0:x1]
            sel = (mask.view(bool)) & (zq < zroi) & (zq > _NEAR)
            if not sel.any():
                continue
            hom = cv2.getPerspectiveTransform(self._tex_corners[qid], (uv - [x0, y0]).astype(np.float32))
            warped = cv2.warpPerspective(quad.texture, hom, (rw, rh), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REPLICATE)
            np.copyto(color[y0:y1, x0:x1], warped, where=sel[..., None])
            np.copyto(zroi, zq, where=sel)
            ids[y0:y1, x0:x1][sel] = qid
        zbuf[np.isinf(zbuf)] = 0.0
        return color, zbuf, ids

    def visible_faces(self, pose: np.ndarray, ids: np.ndarray, min_visible: float = 0.6) -> list[list[int]]:
        """Boxes [x1, y1, x2, y2] of faces at least `min_visible` unoccluded and inside the image."""
        w, h = self.intr.width, self.intr.height
        boxes = []
        for qid, quad in enumerate(self.quads):
            if quad.face_rect is None:
                continue
            uv, z = self.project(quad.corners(quad.face_rect), pose)
            if np.any(z < _NEAR):
                continue
            x1, y1 = uv.min(0)
            x2, y2 = uv.max(0)
            full = max((x2 - x1) * (y2 - y1), 1e-6)
            cx1, cy1, cx2, cy2 = int(max(x1, 0)), int(max(y1, 0)), int(min(np.ceil(x2), w)), int(min(np.ceil(y2), h))
            if cx2 - cx1 < 6 or cy2 - cy1 < 6:
                continue
            inside = (cx2 - cx1) * (cy2 - cy1)
            if inside / full < min_visible:
                continue
            seen = np.count_nonzero(ids[cy1:cy2, cx1:cx2] == qid) / inside
            if seen >= min_visible:
                boxes.append([cx1, cy1, cx2, cy2])
        return boxes
