"""UV-textured meshes: a texture atlas baked from the keyframes' *redacted* colour images (backend side,
or the device off the hot path: `crowdcap mesh --texture`; measured in `python -m bench texture`).

Steps: decimate the fused mesh (a texture carries the detail, so fewer triangles do), a UV atlas
(Open3D's tensor `compute_uvatlas` — Microsoft UVAtlas — when the mesh is clean enough for it; TSDF
meshes often are not ("Non-manifold mesh"), then a triangle-pair grid atlas: every triangle gets its
own half-cell, with a gutter), then `project_images_to_albedo` blends the posed keyframe images into
the atlas. Texels nothing projected onto are filled from their neighbours (no black seams).

Privacy: the atlas is made only from the images the device sent, which were redacted before they
were stored or sent; nothing else is sampled. A test paints a secret pattern the redactor blacked out
and checks no texel of it survives.

Known limit: `project_images_to_albedo` has no depth test, so a surface hidden behind something in a
keyframe takes the occluder's colour from that image (still only redacted pixels).

UVs are returned in glTF's convention (origin at the image's top-left); Open3D's albedo has v up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from depth.fusion import FusionKeyframe


@dataclass
class TexturedMesh:
    vertices: np.ndarray   # V×3 float (world frame, m)
    triangles: np.ndarray  # M×3 int
    uvs: np.ndarray        # V×2 float32, glTF convention (0,0 = top-left of the texture)
    texture: np.ndarray    # S×S×3 uint8 RGB
    atlas: str             # "uvatlas" or "grid"
    seconds: dict[str, float]


def grid_atlas(n_triangles: int, size: int, gutter_px: float = 1.5) -> np.ndarray:
    """M×3×2 UVs (Open3D convention, v up): triangles in pairs, each pair one square cell."""
    n = max(1, int(np.ceil(np.sqrt((n_triangles + 1) // 2))))
    s, g = 1.0 / n, gutter_px / size
    k = np.arange(n_triangles)
    cell = k // 2
    cx, cy = (cell % n) * s, (cell // n) * s
    lx, ly, hx, hy = cx + g, cy + g, cx + s - g, cy + s - g
    lower = np.stack([np.stack([lx, ly], 1), np.stack([hx - g, ly], 1), np.stack([lx, hy - g], 1)], 1)
    upper = np.stack([np.stack([hx, hy], 1), np.stack([lx + g, hy], 1), np.stack([hx, ly + g], 1)], 1)
    return np.where((k % 2 == 0)[:, None, None], lower, upper).astype(np.float32)


def _fill_empty(tex: np.ndarray, empty: np.ndarray, rounds: int = 4) -> np.ndarray:
    """Grow filled texels into empty ones (a few pixels), so sampling at triangle edges finds colour."""
    out = tex.copy()
    filled = ~empty
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(rounds):
        grown = cv2.dilate(out, kernel)
        newly = cv2.dilate(filled.astype(np.uint8), kernel).astype(bool) & ~filled
        if not newly.any():
            break
        out[newly] = grown[newly]
        filled |= newly
    return out


UVATLAS_MAX_TRIANGLES = 6000  # UVAtlas took ~10 s at 4k triangles and > 2.5 min at 20k here (2 cores)


def texture_mesh(mesh: Any, keyframes: Sequence[FusionKeyframe], *, tex_size: int = 1024,
                 max_triangles: int = 20000, atlas: str = "auto") -> TexturedMesh:
    """Bake a texture atlas for `mesh` (an `open3d.geometry.TriangleMesh` in the world frame) from
    `keyframes` (their colour is what the device sent: redacted).

    atlas: "uvatlas" (Open3D's compute_uvatlas; falls back to the grid when it refuses the mesh),
    "grid", or "auto" (UVAtlas up to UVATLAS_MAX_TRIANGLES triangles, the grid above: UVAtlas's time
    grows much faster than linearly)."""
    if atlas not in ("auto", "uvatlas", "grid"):
        raise ValueError(f"texture: atlas: expected auto, uvatlas or grid, got {atlas!r}")
    import open3d as o3d
    import open3d.core as o3c

    if not keyframes:
        raise ValueError("texture: no keyframes to take colour from")
    if tex_size < 64 or tex_size > 8192:
        raise ValueError(f"texture: tex_size: expected 64-8192, got {tex_size}")
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    m = mesh
    if len(m.triangles) > max_triangles:
        m = m.simplify_quadric_decimation(max_triangles)
    m.remove_degenerate_triangles()
    m.remove_unreferenced_vertices()
    if len(m.triangles) == 0:
        raise ValueError("texture: the mesh is empty")
    seconds["decimate"] = time.monotonic() - t0
    vertices = np.asarray(m.vertices, dtype=np.float32)
    tris = np.asarray(m.triangles, dtype=np.int64)
    t0 = time.monotonic()
    tm = o3d.t.geometry.TriangleMesh(o3c.Tensor(vertices), o3c.Tensor(tris))
    use_uvatlas = atlas == "uvatlas" or (atlas == "auto" and len(tris) <= UVATLAS_MAX_TRIANGLES)
    atlas = "grid"
    if use_uvatlas:
        try:
            tm.compute_uvatlas(size=tex_size)
            atlas = "uvatlas"
        except RuntimeError:  # "UVAtlasPartition: Non-manifold mesh": typical of TSDF output
            tm = o3d.t.geometry.TriangleMesh(o3c.Tensor(vertices), o3c.Tensor(tris))
    if atlas == "grid":
        tm.triangle.texture_uvs = o3c.Tensor(grid_atlas(len(tris), tex_size))
    seconds["atlas"] = time.monotonic() - t0
    t0 = time.monotonic()
    images = [o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(k.color_rgb))) for k in keyframes]
    intr = [o3c.Tensor(k.intrinsics.matrix(), o3c.float64) for k in keyframes]
    extr = [o3c.Tensor(np.linalg.inv(k.pose), o3c.float64) for k in keyframes]  # world-to-camera
    albedo = tm.project_images_to_albedo(images, intr, extr, tex_size=tex_size, update_material=False)
    tex = np.ascontiguousarray(albedo.as_tensor().numpy()[:, :, :3])
    if tex.dtype != np.uint8:
        tex = np.clip(np.rint(tex * (255.0 if tex.max(initial=0) <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    tex = _fill_empty(tex, ~tex.any(axis=2))
    seconds["project"] = time.monotonic() - t0
    corner_uv = tm.triangle.texture_uvs.numpy().reshape(-1, 2).astype(np.float32)
    corner_uv[:, 1] = 1.0 - corner_uv[:, 1]  # Open3D's albedo has v up; glTF's origin is the top-left
    # one vertex per triangle corner: a vertex on a chart seam has a different UV in each triangle
    out_vertices = vertices[tris.reshape(-1)]
    out_tris = np.arange(len(out_vertices), dtype=np.int64).reshape(-1, 3)
    return TexturedMesh(out_vertices, out_tris, corner_uv, tex, atlas, {k: round(v, 3) for k, v in seconds.items()})


def save_textured_glb(path: Any, tm: TexturedMesh) -> None:
    """A .glb with TEXCOORD_0 and an embedded PNG base-colour texture (glTF Y-up; see depth.gltf)."""
    from depth.gltf import write_glb

    ok, png = cv2.imencode(".png", tm.texture[:, :, ::-1])
    if not ok:
        raise ValueError("texture: PNG encoding failed")
    write_glb(path, tm.vertices, tm.triangles, uvs=tm.uvs, texture_png=png.tobytes())
