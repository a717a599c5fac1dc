"""Back-projection agrees with Open3D, keeps redacted regions empty, and writes readable PLY."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from capture.frame import Intrinsics
from capture.synthetic import SyntheticSource
from depth.cloud import back_project, voxel_downsample, write_ply


@pytest.fixture(scope="module")
def frame():  # type: ignore[no-untyped-def]
    src = SyntheticSource(pace="fast", n_frames=1)
    src.open()
    f = src.read()
    assert f is not None
    return f


def open3d_cloud(color_bgr: np.ndarray, depth: np.ndarray, intr: Intrinsics, scale: float, trunc: float):  # type: ignore[no-untyped-def]
    rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
        o3d.geometry.Image(np.ascontiguousarray(color_bgr[:, :, ::-1])), o3d.geometry.Image(depth),
        depth_scale=scale, depth_trunc=trunc, convert_rgb_to_intensity=False)
    pin = o3d.camera.PinholeCameraIntrinsic(intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy)
    return o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, pin)


@pytest.mark.parametrize("trunc", [3.0, 1000.0])
def test_agrees_with_open3d(frame, trunc: float) -> None:  # type: ignore[no-untyped-def]
    ours = back_project(frame.depth, frame.intrinsics, frame.depth_scale, frame.color, depth_trunc=trunc)
    ref = open3d_cloud(frame.color, frame.depth, frame.intrinsics, frame.depth_scale, trunc)
    assert len(ours) == len(ref.points) > 1000
    assert np.abs(ours.points - np.asarray(ref.points)).max() < 1e-6
    assert np.abs(ours.colors.astype(np.float64) - np.asarray(ref.colors) * 255).max() < 0.5


def test_truncation_invalid_and_stride(frame) -> None:  # type: ignore[no-untyped-def]
    cloud = back_project(frame.depth, frame.intrinsics, frame.depth_scale, frame.color, depth_trunc=2.0)
    assert len(cloud) == np.count_nonzero((frame.depth > 0) & (frame.depth < 2000))
    assert cloud.points[:, 2].max() < 2.0 and cloud.points[:, 2].min() > 0
    strided = back_project(frame.depth, frame.intrinsics, frame.depth_scale, frame.color, depth_trunc=2.0, stride=4)
    assert len(strided) == np.count_nonzero((frame.depth[::4, ::4] > 0) & (frame.depth[::4, ::4] < 2000))


def test_empty_depth_gives_empty_cloud(frame) -> None:  # type: ignore[no-untyped-def]
    cloud = back_project(np.zeros_like(frame.depth), frame.intrinsics, frame.depth_scale, frame.color)
    assert len(cloud) == 0 and cloud.points.shape == (0, 3)


def test_redacted_box_yields_no_points(frame) -> None:  # type: ignore[no-untyped-def]
    x1, y1, x2, y2 = 200, 120, 360, 300
    depth = frame.depth.copy()
    depth[y1:y2, x1:x2] = 0  # what the redactor does to depth in a redacted box
    intr = frame.intrinsics
    for kwargs in ({}, {"stride": 3}, {"voxel_size": 0.01, "normals": True}):
        cloud = back_project(depth, intr, frame.depth_scale, frame.color, depth_trunc=10.0, **kwargs)
        u = cloud.points[:, 0] / cloud.points[:, 2] * intr.fx + intr.cx
        v = cloud.points[:, 1] / cloud.points[:, 2] * intr.fy + intr.cy
        inside = (u > x1 - 0.5) & (u < x2 - 0.5) & (v > y1 - 0.5) & (v < y2 - 0.5)
        if "voxel_size" in kwargs:  # voxel means may move a point by < half a voxel across the border
            margin = 0.01 * intr.fx / cloud.points[:, 2]
            inside = (u > x1 + margin) & (u < x2 - 1 - margin) & (v > y1 + margin) & (v < y2 - 1 - margin)
        assert not inside.any(), kwargs


def test_voxel_downsample_and_normals(frame) -> None:  # type: ignore[no-untyped-def]
    cloud = back_project(frame.depth, frame.intrinsics, frame.depth_scale, frame.color, normals=True)
    assert cloud.normals is not None
    n = np.linalg.norm(cloud.normals, axis=1)
    assert np.mean(np.abs(n - 1) < 1e-3) > 0.95
    assert np.mean(np.sum(cloud.normals * cloud.points, axis=1) <= 0) > 0.99  # facing the camera
    down = voxel_downsample(cloud, 0.05)
    ref = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud.points)).voxel_down_sample(0.05)
    assert len(down) == len(ref.points)
    assert np.allclose(np.sort(down.points[:, 2]), np.sort(np.asarray(ref.points)[:, 2]), atol=1e-9)


def test_mismatched_sizes_are_clear_errors(frame) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="depth: size 320×240 does not match the camera 640×480"):
        back_project(frame.depth[::2, ::2], frame.intrinsics, frame.depth_scale, frame.color)
    with pytest.raises(ValueError, match="color: shape"):
        back_project(frame.depth, frame.intrinsics, frame.depth_scale, frame.color[::2])


def test_ply_round_trip(frame, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cloud = back_project(frame.depth, frame.intrinsics, frame.depth_scale, frame.color, stride=4, normals=True)
    path = tmp_path / "c.ply"
    write_ply(path, cloud.points, cloud.colors, cloud.normals)
    pc = o3d.io.read_point_cloud(str(path))
    assert len(pc.points) == len(cloud)
    assert np.allclose(np.asarray(pc.points), cloud.points, atol=1e-6)
    assert np.allclose(np.asarray(pc.colors) * 255, cloud.colors, atol=0.5)
    assert pc.has_normals()


@pytest.mark.parametrize("trunc", [0.0, 0.0005, 2.0, 65.535, 70.0])
def test_integer_and_float_paths_agree_at_the_extremes(trunc: float) -> None:
    intr = Intrinsics(8, 4, 5.0, 5.0, 3.5, 1.5)
    depth = np.array([[0, 1, 2, 999, 1000, 1999, 2000, 2001],
                      [65535, 65534, 0, 0, 3, 4, 5, 6],
                      [7, 8, 9, 10, 11, 12, 13, 14],
                      [60000, 65535, 1, 0, 2, 0, 3, 0]], np.uint16)
    fast = back_project(depth, intr, 1000.0, depth_trunc=trunc)
    slow = back_project(depth, intr, 1000.0, depth_trunc=trunc, normals=True)  # the float path
    z = depth / 1000.0
    expected = np.count_nonzero((depth > 0) & ((z < trunc) if trunc > 0 else True))
    assert len(fast) == len(slow) == expected
    assert np.array_equal(fast.points, slow.points)
