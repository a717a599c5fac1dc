"""Back-projection of an RGB-D frame to a coloured point cloud (vectorised numpy), and a PLY writer.

Agrees with Open3D's `PointCloud.create_from_rgbd_image` (same points, same order) when called with
`stride=1` and no voxel size: depth is converted to float32 metres, truncated at `depth_trunc`
(beyond → invalid), and 0 means no data — so depth the redactor zeroed never becomes a point.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from capture.frame import Intrinsics


@dataclass
class PointCloud:
    """points: N×3 float64 metres (camera frame unless transformed); colors: N×3 uint8 RGB;
    normals: N×3 float32 unit vectors facing the camera, or None."""

    points: np.ndarray
    colors: np.ndarray
    normals: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def transformed(self, pose: np.ndarray) -> PointCloud:
        """The cloud in another frame: p' = R p + t for a 4×4 `pose`."""
        pts = self.points @ pose[:3, :3].T + pose[:3, 3]
        nrm = None if self.normals is None else (self.normals @ pose[:3, :3].T).astype(np.float32)
        return PointCloud(pts, self.colors, nrm)


def _rays(intr: Intrinsics, stride: int) -> tuple[np.ndarray, np.ndarray]:
    # Per-column and per-row factors (u - cx) / fx, computed like Open3D: in float64.
    us = np.arange(0, intr.width, stride, dtype=np.float64)
    vs = np.arange(0, intr.height, stride, dtype=np.float64)
    return (us - intr.cx) / intr.fx, (vs - intr.cy) / intr.fy


@lru_cache(maxsize=8)
def _metres_lut(depth_scale: float, depth_trunc: float) -> np.ndarray:
    # uint16 → float32 metres for every possible value, computed as Open3D does (double divide, then
    # float), with truncation baked in: one gather per frame instead of a divide, cast and compare.
    lut = (np.arange(65536, dtype=np.float64) / depth_scale).astype(np.float32)
    if depth_trunc > 0:
        lut[lut >= depth_trunc] = 0.0
    lut.setflags(write=False)
    return lut


@lru_cache(maxsize=8)
def _first_truncated(depth_scale: float, depth_trunc: float) -> int:
    """The smallest uint16 value that truncation drops (65536 if none): the LUT is monotonic."""
    lut = _metres_lut(depth_scale, depth_trunc)
    dropped = np.flatnonzero(lut[1:] == 0)
    return int(dropped[0]) + 1 if dropped.size else 65536


def depth_to_metres(depth: np.ndarray, depth_scale: float, depth_trunc: float) -> np.ndarray:
    """float32 metres, 0 where there is no data or at/beyond `depth_trunc` (as Open3D does)."""
    if depth.dtype == np.uint16:
        return _metres_lut(float(depth_scale), float(depth_trunc))[depth]
    z = (depth / np.float64(depth_scale)).astype(np.float32)
    if depth_trunc > 0:
        z[z >= depth_trunc] = 0.0
    return z


def check_rgbd(color: np.ndarray | None, depth: np.ndarray, intr: Intrinsics) -> None:
    """Clear errors for mismatched inputs (names the field)."""
    if not isinstance(depth, np.ndarray) or depth.ndim != 2 or depth.dtype not in (np.uint16, np.float32):
        raise ValueError(f"depth: expected an H×W uint16 or float32 image, got "
                         f"{getattr(depth, 'dtype', type(depth).__name__)} {getattr(depth, 'shape', '')}")
    if depth.shape != (intr.height, intr.width):
        raise ValueError(f"depth: size {depth.shape[1]}×{depth.shape[0]} does not match the camera "
                         f"{intr.width}×{intr.height}")
    if color is not None and (color.ndim != 3 or color.shape[2] != 3 or color.shape[:2] != depth.shape):
        raise ValueError(f"color: shape {color.shape} does not match depth {depth.shape[1]}×{depth.shape[0]}")


def back_project(depth: np.ndarray, intr: Intrinsics, depth_scale: float, color_bgr: np.ndarray | None = None,
                 *, depth_trunc: float = 3.0, stride: int = 1, voxel_size: float = 0.0,
                 normals: bool = False) -> PointCloud:
    """Points of every valid depth pixel (every `stride`-th row and column), coloured from `color_bgr`.

    depth: H×W uint16 in units of 1/`depth_scale` m (or float32 metres with depth_scale=1).
    voxel_size > 0 averages points (and colours) per voxel; normals come from image-grid neighbours.
    """
    check_rgbd(color_bgr, depth, intr)
    if stride < 1:
        raise ValueError(f"stride: expected a positive integer, got {stride}")
    d = depth[::stride, ::stride]
    rx, ry = _rays(intr, stride)
    w = d.shape[1]
    z = None
    if d.dtype == np.uint16 and not normals:
        # Select on the integers (valid ⟺ 0 < d < first truncated value), convert only valid pixels.
        lut = _metres_lut(float(depth_scale), float(depth_trunc))
        limit = np.uint16(_first_truncated(float(depth_scale), float(depth_trunc)) - 1)
        valid = (d - np.uint16(1)) < limit  # uint16 wrap-around sends 0 to 65535
        idx = np.flatnonzero(valid)  # row-major, the order Open3D emits points in
        rows = np.repeat(np.arange(d.shape[0]), np.count_nonzero(valid, axis=1))  # cheaper than divmod
        zv = lut[np.take(d, idx)].astype(np.float64)
    else:
        z = depth_to_metres(d, depth_scale, depth_trunc)
        idx = np.flatnonzero(z)
        rows = np.repeat(np.arange(d.shape[0]), np.count_nonzero(z, axis=1))
        zv = np.take(z, idx).astype(np.float64)
    cols = idx - rows * w
    pts = np.empty((zv.size, 3), np.float64)
    np.multiply(rx[cols], zv, out=pts[:, 0])
    np.multiply(ry[rows], zv, out=pts[:, 1])
    pts[:, 2] = zv
    if color_bgr is not None:
        c = color_bgr if stride == 1 else color_bgr[::stride, ::stride]
        flat = c.reshape(-1, 3) if c.flags.c_contiguous else np.ascontiguousarray(c).reshape(-1, 3)
        colors = np.take(flat, idx, axis=0)[:, ::-1]  # take: ~4x faster than fancy indexing here
    else:
        colors = np.full((zv.size, 3), 255, np.uint8)
    nrm = _grid_normals(z, rx, ry).reshape(-1, 3)[idx] if z is not None and normals else None
    cloud = PointCloud(pts, np.ascontiguousarray(colors), nrm)
    return voxel_downsample(cloud, voxel_size) if voxel_size > 0 else cloud


def _grid_normals(z: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Normals from central differences on the organised point grid, facing the camera (H×W×3)."""
    z64 = z.astype(np.float32)
    grid = np.stack((rx[None, :].astype(np.float32) * z64, ry[:, None].astype(np.float32) * z64, z64), axis=-1)
    du = np.zeros_like(grid)
    dv = np.zeros_like(grid)
    du[:, 1:-1] = grid[:, 2:] - grid[:, :-2]
    dv[1:-1, :] = grid[2:, :] - grid[:-2, :]
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)
    flip = np.sum(n * grid, axis=-1) > 0  # make them face the camera (opposite to the viewing ray)
    n[flip] *= -1
    return n


def voxel_downsample(cloud: PointCloud, voxel_size: float) -> PointCloud:
    """One point per occupied voxel: the mean position, colour (and renormalised normal)."""
    if voxel_size <= 0:
        raise ValueError(f"voxel_size: expected a positive size in metres, got {voxel_size}")
    if len(cloud) == 0:
        return cloud
    # Grid anchored like Open3D's voxel_down_sample: at the minimum bound minus half a voxel.
    origin = cloud.points.min(axis=0) - voxel_size / 2
    keys = np.floor((cloud.points - origin) / voxel_size).astype(np.int64)
    dims = keys.max(axis=0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(inverse, values[:, i], minlength=counts.size) for i in range(3)], 1) / counts[:, None]

    pts = mean(cloud.points)
    cols = np.clip(np.rint(mean(cloud.colors.astype(np.float64))), 0, 255).astype(np.uint8)
    nrm = None
    if cloud.normals is not None:
        nrm = mean(cloud.normals.astype(np.float64))
        nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
        nrm = nrm.astype(np.float32)
    return PointCloud(pts, cols, nrm)


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None,
              normals: np.ndarray | None = None) -> None:
    """Binary little-endian PLY with float32 x y z, optional nx ny nz, uchar red green blue."""
    n = int(points.shape[0])
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rec = np.empty(n, dtype=fields)
    for i, a in enumerate("xyz"):
        rec[a] = points[:, i]
    if normals is not None:
        for i, a in enumerate(("nx", "ny", "nz")):
            rec[a] = normals[:, i]
    if colors is not None:
        for i, a in enumerate(("red", "green", "blue")):
            rec[a] = colors[:, i]
    ply_type = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", "comment crowdcap depth.cloud", f"element vertex {n}"]
    header += [f"property {ply_type[t]} {name}" for name, t in fields]
    header.append("end_header")
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rec.tobytes())
