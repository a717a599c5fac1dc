"""TSDF fusion makes real surface, keeps redacted regions empty, and exports PLY and GLB."""

from __future__ import annotations

import json
import struct

import numpy as np
import open3d as o3d
import pytest

from capture.synthetic import SyntheticSource
from depth.fusion import downscale_keyframe, fuse_keyframes, save_mesh


@pytest.fixture(scope="module")
def frames():  # type: ignore[no-untyped-def]
    src = SyntheticSource(pace="fast", n_frames=31, seed=0)
    src.open()
    return [f for f in iter(src.read, None)][::10]


def keyframe(f, depth=None, factor=2):  # type: ignore[no-untyped-def]
    return downscale_keyframe(f.attachments["truth"]["pose"], f.color, f.depth if depth is None else depth,
                              f.intrinsics, f.depth_scale, factor, f.seq)


def project(vertices: np.ndarray, pose: np.ndarray, intr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    cam = (vertices - pose[:3, 3]) @ pose[:3, :3]
    return cam[:, 0] / cam[:, 2] * intr.fx + intr.cx, cam[:, 1] / cam[:, 2] * intr.fy + intr.cy, cam[:, 2]


def test_fusion_produces_surface_on_the_true_geometry(frames) -> None:  # type: ignore[no-untyped-def]
    mesh = fuse_keyframes([keyframe(f) for f in frames], voxel_size=0.03)
    v = np.asarray(mesh.vertices)
    assert len(mesh.triangles) > 5000 and mesh.has_vertex_colors()
    assert np.asarray(mesh.vertex_colors).std() > 0.05  # textured, not one flat colour
    # Vertices lie on the observed surface: compare with the depth of the first frame where visible.
    f = frames[0]
    u, vv, z = project(v, f.attachments["truth"]["pose"], f.intrinsics)
    ui, vi = np.rint(u).astype(int), np.rint(vv).astype(int)
    ok = (z > 0.3) & (ui >= 0) & (ui < 640) & (vi >= 0) & (vi < 480)
    d = f.depth[vi[ok], ui[ok]] / f.depth_scale
    seen = d > 0
    err = np.abs(d[seen] - z[ok][seen])
    assert seen.sum() > 1000 and np.median(err) < 0.03


def test_empty_input_gives_empty_mesh(frames) -> None:  # type: ignore[no-untyped-def]
    f = frames[0]
    mesh = fuse_keyframes([keyframe(f, depth=np.zeros_like(f.depth))])
    assert len(mesh.triangles) == 0
    with pytest.raises(ValueError, match="empty"):
        save_mesh(mesh, "/tmp/never-written.glb")


def test_redacted_box_absent_from_mesh(frames) -> None:  # type: ignore[no-untyped-def]
    """One keyframe with depth zeroed in a box: no vertex projects into the box."""
    f = frames[0]
    x1, y1, x2, y2 = 240, 160, 400, 320
    depth = f.depth.copy()
    depth[y1:y2, x1:x2] = 0
    mesh = fuse_keyframes([keyframe(f, depth=depth)], voxel_size=0.02)
    v = np.asarray(mesh.vertices)
    assert len(v) > 1000
    u, vv, _ = project(v, f.attachments["truth"]["pose"], f.intrinsics)
    assert not ((u > x1 - 0.5) & (u < x2 - 0.5) & (vv > y1 - 0.5) & (vv < y2 - 0.5)).any()
    # ... and the surface around the box is there (the hole is the box, not the whole frame).
    around = (u > x1 - 60) & (u < x2 + 60) & (vv > y1 - 60) & (vv < y2 + 60)
    assert around.sum() > 100


def test_redacted_region_absent_across_keyframes(frames) -> None:  # type: ignore[no-untyped-def]
    """A region redacted in every keyframe (a world-fixed spot, like a face) stays out of the fused mesh."""
    f0 = frames[0]
    pose0, intr = f0.attachments["truth"]["pose"], f0.intrinsics
    z0 = f0.depth[240, 320] / f0.depth_scale
    centre = pose0[:3, :3] @ np.array([0.0, 0.0, z0]) + pose0[:3, 3]
    radius = 0.4
    kfs, boxes = [], []
    for f in frames:
        pose = f.attachments["truth"]["pose"]
        u, v, z = project(centre[None], pose, intr)
        r_px = radius * intr.fx / z[0]
        box = (int(u[0] - r_px), int(v[0] - r_px), int(u[0] + r_px) + 1, int(v[0] + r_px) + 1)
        depth = f.depth.copy()
        depth[max(box[1], 0):max(box[3], 0), max(box[0], 0):max(box[2], 0)] = 0
        kfs.append(keyframe(f, depth=depth))
        boxes.append((pose, box))
    mesh = fuse_keyframes(kfs, voxel_size=0.02)
    v = np.asarray(mesh.vertices)
    assert len(v) > 1000
    for pose, (x1, y1, x2, y2) in boxes:
        u, vv, z = project(v, pose, intr)
        inside = (z > 0) & (u > x1 - 0.5) & (u < x2 - 0.5) & (vv > y1 - 0.5) & (vv < y2 - 0.5)
        # Only surface at the redacted depth counts: walls far behind the spot may show through.
        near = np.abs(np.linalg.norm(v - centre, axis=1)) < radius
        assert not (inside & near).any()


def test_exports_ply_and_glb(frames, tmp_path) -> None:  # type: ignore[no-untyped-def]
    mesh = fuse_keyframes([keyframe(f, factor=4) for f in frames[:2]], voxel_size=0.04)
    save_mesh(mesh, tmp_path / "m.ply")
    save_mesh(mesh, tmp_path / "m.glb")
    back = o3d.io.read_triangle_mesh(str(tmp_path / "m.ply"))
    assert len(back.triangles) == len(mesh.triangles) and back.has_vertex_colors()
    data = (tmp_path / "m.glb").read_bytes()
    magic, version, length = struct.unpack("<4sII", data[:12])
    assert magic == b"glTF" and version == 2 and length == len(data)
    chunk_len, chunk_type = struct.unpack("<I4s", data[12:20])
    doc = json.loads(data[20:20 + chunk_len])
    attrs = doc["meshes"][0]["primitives"][0]["attributes"]
    assert {"POSITION", "COLOR_0"} <= set(attrs)
    assert doc["accessors"][attrs["POSITION"]]["count"] == len(mesh.vertices)
    assert "uri" not in doc["buffers"][0]  # one BIN chunk, not a base64 data URI
    bin_len, bin_type = struct.unpack("<I4s", data[20 + chunk_len:28 + chunk_len])
    assert bin_type == b"BIN\x00" and bin_len == doc["buffers"][0]["byteLength"]
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= bin_len
    # A standard importer (Open3D's ASSIMP reader) loads it with the same geometry and colours.
    loaded = o3d.io.read_triangle_mesh(str(tmp_path / "m.glb"))
    # (ASSIMP drops the few vertices no triangle uses.)
    assert len(loaded.triangles) == len(mesh.triangles) and 0.99 * len(mesh.vertices) <= len(loaded.vertices)
    assert loaded.has_vertex_colors()
    assert np.allclose(np.asarray(loaded.vertex_colors).mean(0), np.asarray(mesh.vertex_colors).mean(0), atol=0.01)
    with pytest.raises(ValueError, match="unsupported mesh format"):
        save_mesh(mesh, tmp_path / "m.stl")
