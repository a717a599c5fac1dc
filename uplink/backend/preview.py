"""A still 3D preview for report.html: the session's keyframe clouds, placed in the world by their
frames' poses, drawn from above and behind (an oblique orthographic view), as a PNG.

No WebGL and no viewer: one image that renders the same in any browser, offline. Points are splatted
far-to-near (painter's order), so nearer surfaces cover farther ones. World axes: docs/frames.md (our
world is OpenCV's, y down; the preview turns it to y up like glTF before viewing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

MAX_POINTS = 400_000


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(N×3 float points, N×3 uint8 RGB or None) from a binary little-endian PLY with float x y z and
    optional uchar red green blue (what the sink writes)."""
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary little-endian PLY is read here")
    n = next((int(ln.split()[2]) for ln in header if ln.startswith("element vertex")), 0)
    props = [ln.split() for ln in header if ln.startswith("property")]
    types = {"float": "<f4", "float32": "<f4", "double": "<f8", "uchar": "u1", "uint8": "u1"}
    try:
        dtype = np.dtype([(p[2], types[p[1]]) for p in props])
    except (KeyError, IndexError):
        raise ValueError(f"{path}: unsupported PLY properties") from None
    body = data[end + len(b"end_header\n"):]
    if n <= 0 or len(body) < n * dtype.itemsize:
        raise ValueError(f"{path}: truncated PLY")
    v = np.frombuffer(body, dtype, n)
    pts = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    cols = np.stack([v["red"], v["green"], v["blue"]], 1) if "red" in v.dtype.names else None
    return pts, cols


def world_clouds(root: Path, frames: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """All clouds of a session in world coordinates (by the pose of the frame with the cloud's seq)."""
    poses = {}
    for f in frames:
        p = f.get("pose")
        try:
            m = np.asarray(p, dtype=np.float64).reshape(4, 4)
        except (TypeError, ValueError):
            continue
        if np.all(np.isfinite(m)):
            poses[f["seq"]] = m
    pts_all, cols_all = [], []
    paths = [p for p in sorted((root / "clouds").glob("*.ply")) if p.stem.isdigit() and int(p.stem) in poses]
    # Memory stays bounded whatever the session's length (the ingest finalizes long sessions too): each
    # cloud keeps at most its share of MAX_POINTS as it is read, instead of all clouds then a sample.
    share = max(1, MAX_POINTS // max(1, len(paths)))
    for path in paths:
        pose = poses[int(path.stem)]
        try:
            pts, cols = read_ply(path)
        except (ValueError, OSError):
            continue  # a broken cloud is left out of the preview, not the report's death
        if len(pts) > share:
            keep = np.random.default_rng(int(path.stem)).choice(len(pts), share, replace=False)
            pts, cols = pts[keep], None if cols is None else cols[keep]
        pts_all.append(pts @ pose[:3, :3].T + pose[:3, 3])
        cols_all.append(cols if cols is not None else np.full((len(pts), 3), 180, np.uint8))
    if not pts_all:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    pts, cols = np.concatenate(pts_all), np.concatenate(cols_all)
    ok = np.all(np.isfinite(pts), axis=1) & (np.abs(pts).max(axis=1) < 1e4)
    pts, cols = pts[ok], cols[ok]
    if len(pts) > MAX_POINTS:
        keep = np.random.default_rng(0).choice(len(pts), MAX_POINTS, replace=False)
        pts, cols = pts[keep], cols[keep]
    return pts, cols


def render(points: np.ndarray, colors: np.ndarray, size: tuple[int, int] = (720, 420),
           yaw_deg: float = -35.0, pitch_deg: float = 35.0) -> np.ndarray | None:
    """BGR image of the points from an oblique view; None when there is nothing to draw."""
    if len(points) == 0:
        return None
    p = points * np.array([1.0, -1.0, -1.0])  # OpenCV world → y up (as glTF)
    lo_up, hi_up = np.percentile(p[:, 1], [1, 99.5])
    keep = p[:, 1] < hi_up - 0.12 * (hi_up - lo_up)  # cut the ceiling away: a room is seen from inside
    if keep.sum() > 100:
        p, colors = p[keep], colors[keep]
    p = p - np.median(p, axis=0)
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    v = p @ (rx @ ry).T  # view: x right, y up, z towards the viewer
    w, h = size
    lo, hi = np.percentile(v[:, :2], 1, axis=0), np.percentile(v[:, :2], 99, axis=0)
    scale = 0.9 * min(w / max(hi[0] - lo[0], 1e-6), h / max(hi[1] - lo[1], 1e-6))
    mid = (lo + hi) / 2
    u = np.rint((v[:, 0] - mid[0]) * scale + w / 2).astype(np.int64)
    r = np.rint(h / 2 - (v[:, 1] - mid[1]) * scale).astype(np.int64)
    order = np.argsort(v[:, 2])  # far (most negative z) first; nearer points overwrite
    img = np.full((h, w, 3), 250, np.uint8)
    bgr = np.ascontiguousarray(colors[:, ::-1])
    for du in (0, 1):
        for dv in (0, 1):
            uu, rr = u[order] + du, r[order] + dv
            ok = (uu >= 0) & (uu < w) & (rr >= 0) & (rr < h)
            img[rr[ok], uu[ok]] = bgr[order][ok]
    return img


def preview_png(root: Path, frames: list[dict[str, Any]]) -> tuple[bytes | None, int]:
    """(PNG bytes of the preview or None, number of points drawn)."""
    pts, cols = world_clouds(root, frames)
    img = render(pts, cols)
    if img is None:
        return None, 0
    ok, buf = cv2.imencode(".png", img)
    return (buf.tobytes() if ok else None), len(pts)
