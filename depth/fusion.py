"""TSDF fusion of posed keyframes into a vertex-coloured triangle mesh (off the hot path).

Uses Open3D's tensor `VoxelBlockGrid` (sparse, so memory follows the scene, not a bounding cube).
Not `ScalableTSDFVolume`: in open3d 0.20.0 it silently integrates nothing.

Privacy: depth the redactor zeroed stays a hole in the mesh. Large zero regions are additionally
grown by `privacy_margin_px` before integration, so marching-cubes vertices (which interpolate between
voxels) cannot creep into a redacted box from its border.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from capture.frame import Intrinsics


@dataclass
class FusionKeyframe:
    """What fusion needs of a keyframe: camera-to-world pose, RGB colour, depth, camera."""

    pose: np.ndarray
    color_rgb: np.ndarray   # H×W×3 uint8, RGB
    depth: np.ndarray       # H×W uint16, 0 = no data
    intrinsics: Intrinsics
    depth_scale: float
    seq: int = 0
    segment: int = 0        # odometry map segment: poses of different segments are not related


def downscale_keyframe(pose: np.ndarray, color_bgr: np.ndarray, depth: np.ndarray, intr: Intrinsics,
                       depth_scale: float, factor: int, seq: int = 0) -> FusionKeyframe:
    """A smaller copy to keep in memory: colour by area averaging, depth by nearest sampling.

    Depth is never interpolated: averaging would bleed real depth into zeroed (redacted) pixels.
    """
    if factor <= 1:
        return FusionKeyframe(pose.copy(), np.ascontiguousarray(color_bgr[:, :, ::-1]), depth.copy(), intr,
                              depth_scale, seq)
    d = np.ascontiguousarray(depth[::factor, ::factor])
    h, w = d.shape
    color = cv2.resize(color_bgr, (w, h), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    s = 1.0 / factor
    # Pixel (i) of the subsampled image is pixel (i * factor) of the original.
    small = Intrinsics(w, h, intr.fx * s, intr.fy * s, intr.cx * s, intr.cy * s, intr.distortion)
    return FusionKeyframe(pose.copy(), np.ascontiguousarray(color), d, small, depth_scale, seq)


def privacy_guard(depth: np.ndarray, margin_px: int) -> np.ndarray:
    """Depth with large zero regions (redactions) grown by `margin_px`; isolated sensor dropouts kept."""
    if margin_px <= 0:
        return depth
    invalid = (depth == 0).astype(np.uint8)
    large = cv2.morphologyEx(invalid, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if not large.any():
        return depth
    grown = cv2.dilate(large, np.ones((2 * margin_px + 1, 2 * margin_px + 1), np.uint8))
    out = depth.copy()
    out[grown.astype(bool)] = 0
    return out


def fuse_keyframes(keyframes: Iterable[FusionKeyframe], *, voxel_size: float = 0.02, depth_trunc: float = 4.0,
                   privacy_margin_px: int = 2, progress: Callable[[int], None] | None = None) -> Any:
    """Integrate keyframes into a TSDF and extract an `open3d.geometry.TriangleMesh` (vertex colours)."""
    import open3d as o3d
    import open3d.core as o3c

    if voxel_size <= 0:
        raise ValueError(f"voxel_size: expected a positive size in metres, got {voxel_size}")
    cpu = o3c.Device("CPU:0")
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)), voxel_size=voxel_size, block_resolution=8, block_count=20000, device=cpu)
    n = 0
    for kf in keyframes:
        if kf.depth.shape != kf.color_rgb.shape[:2] or kf.depth.shape != (kf.intrinsics.height, kf.intrinsics.width):
            raise ValueError(f"keyframe {kf.seq}: colour {kf.color_rgb.shape[:2]}, depth {kf.depth.shape} and camera "
                             f"{kf.intrinsics.width}×{kf.intrinsics.height} do not match")
        depth = privacy_guard(kf.depth, privacy_margin_px)
        if not depth.any():
            continue
        k = o3c.Tensor(kf.intrinsics.matrix(), o3c.float64)
        extrinsic = o3c.Tensor(np.linalg.inv(kf.pose), o3c.float64)  # world-to-camera
        d_img = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth)))
        c_img = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(kf.color_rgb)))
        blocks = grid.compute_unique_block_coordinates(d_img, k, extrinsic, float(kf.depth_scale), depth_trunc)
        grid.integrate(blocks, d_img, c_img, k, extrinsic, float(kf.depth_scale), depth_trunc)
        n += 1
        if progress is not None:
            progress(n)
    if n == 0:
        return o3d.geometry.TriangleMesh()
    mesh = grid.extract_triangle_mesh(weight_threshold=0.5)  # default 3.0 drops surfaces seen < 3 times
    return mesh.to_legacy()


def save_mesh(mesh: Any, path: str | Path) -> None:
    """Write PLY, OBJ or binary glTF (.glb, with COLOR_0 and NORMAL; our writer) by suffix."""
    import open3d as o3d

    from depth.gltf import write_glb

    path = Path(path)
    if path.suffix.lower() not in (".ply", ".glb", ".obj"):
        raise ValueError(f"{path}: unsupported mesh format (use .ply, .glb or .obj)")
    if len(mesh.triangles) == 0:
        raise ValueError(f"{path}: the mesh is empty (no surface was fused)")
    if not mesh.has_vertex_normals():
        mesh.compute_vertex_normals()
    if path.suffix.lower() == ".glb":  # Open3D 0.20's .glb is not valid glTF (see depth.gltf)
        try:
            write_glb(path, np.asarray(mesh.vertices), np.asarray(mesh.triangles),
                      np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else None,
                      np.asarray(mesh.vertex_normals))
        except OSError as e:
            raise ValueError(f"{path}: cannot write ({e.strerror})") from None
        return
    if not o3d.io.write_triangle_mesh(str(path), mesh, write_ascii=False, compressed=False):
        raise ValueError(f"{path}: could not write the mesh")
