"""Reading a TUM-layout session folder for the offline tools (mesh, eval-odometry, cloud)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from capture.frame import Intrinsics, RGBDFrame


def load_camera(path: str | Path | None) -> tuple[Intrinsics, float]:
    """(intrinsics, depth_scale) from camera.json (ours or Open3D's); TUM defaults when `path` is None."""
    from capture import tum

    if path is None:
        return tum.TUM_DEFAULT_INTRINSICS, tum.TUM_DEFAULT_DEPTH_SCALE
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: camera file not found")
    return tum.read_camera_json(p)


def read_color_depth(color_path: str | Path, depth_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(BGR uint8, uint16 depth) from image files, with errors naming the file."""
    for p in (color_path, depth_path):
        if not Path(p).is_file():
            raise ValueError(f"{p}: file not found")
    color = cv2.imread(str(color_path), cv2.IMREAD_COLOR)
    if color is None:
        raise ValueError(f"{color_path}: not a readable image")
    depth = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise ValueError(f"{depth_path}: not a readable image")
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise ValueError(f"{depth_path}: expected a 16-bit single-channel depth image, got {depth.dtype} "
                         f"with shape {depth.shape}")
    if depth.shape != color.shape[:2]:
        raise ValueError(f"{depth_path}: depth is {depth.shape[1]}×{depth.shape[0]} but {color_path} is "
                         f"{color.shape[1]}×{color.shape[0]}")
    return color, depth


def open_session(path: str | Path, n_frames: int | None = None):  # type: ignore[no-untyped-def]
    """A fast `ReplaySource` over a TUM-layout folder (ground truth in `.groundtruth`)."""
    from capture.replay import ReplaySource

    src = ReplaySource(path, pace="fast", n_frames=n_frames)
    src.open()
    return src


def frames(path: str | Path, n_frames: int | None = None) -> Iterator[RGBDFrame]:
    src = open_session(path, n_frames)
    try:
        while (f := src.read()) is not None:
            yield f
    finally:
        src.close()
