"""The depth stage: poses on every frame, keyframes with small clouds, redaction carried through."""

from __future__ import annotations

import numpy as np

import depth
from capture.synthetic import SyntheticSource
from depth.config import DepthConfig
from depth.trajectory import ate_rmse


def test_stage_poses_keyframes_and_clouds() -> None:
    stage = depth.build_stage(DepthConfig(cloud_max_points=5000))
    assert stage.name == "depth"
    src = SyntheticSource(pace="fast", n_frames=60)
    src.open()
    box = (200, 100, 420, 330)  # the redactor zeroes depth in a box; do it on every frame
    poses, truth, n_kf = [], [], 0
    for f in iter(src.read, None):
        d = f.depth.copy()
        d[box[1]:box[3], box[0]:box[2]] = 0
        out = stage.apply(f.replace(depth=d))
        assert out.pose is not None and out.pose.shape == (4, 4)
        assert out.attachments["odometry"]["ok"]
        poses.append(out.pose)
        truth.append(f.attachments["truth"]["pose"])
        if out.keyframe:
            n_kf += 1
            cloud = out.attachments["cloud"]
            pts, cols = cloud["points"], cloud["colors"]
            assert pts.dtype == np.float32 and cols.dtype == np.uint8 and 100 < len(pts) <= 5000
            assert pts.shape == cols.shape == (len(pts), 3)
            intr = f.intrinsics
            u = pts[:, 0] / pts[:, 2] * intr.fx + intr.cx
            v = pts[:, 1] / pts[:, 2] * intr.fy + intr.cy
            assert not ((u > box[0] - 0.5) & (u < box[2] - 0.5) & (v > box[1] - 0.5) & (v < box[3] - 0.5)).any()
        else:
            assert "cloud" not in out.attachments
    assert n_kf >= 2 and stage.status()["keyframes"] == n_kf == len(stage.keyframes)
    assert ate_rmse(np.array(poses), np.array(truth)) < 0.02
    mesh = stage.fuse()
    assert len(mesh.triangles) > 1000
    status = stage.status()
    assert status["frames"] == 60 and status["tracking_lost"] == 0
    stage.close()


def test_disabled_stage_passes_frames_through() -> None:
    stage = depth.build_stage(DepthConfig(enabled=False))
    f = SyntheticSource(pace="fast", n_frames=1).read()
    assert f is not None
    assert stage.apply(f) is f


def test_fuse_uses_the_largest_map_segment() -> None:
    stage = depth.build_stage(DepthConfig(fusion_voxel_size=0.05))
    src = SyntheticSource(pace="fast", n_frames=3)
    frames = list(iter(src.read, None))
    from depth.fusion import downscale_keyframe

    for i, f in enumerate(frames):
        kf = downscale_keyframe(f.attachments["truth"]["pose"], f.color, f.depth, f.intrinsics, f.depth_scale, 4, f.seq)
        kf.segment = 0 if i < 2 else 1
        if i == 2:  # a keyframe of another segment with a nonsense pose must not be fused
            kf.pose = kf.pose @ np.diag([1.0, -1.0, -1.0, 1.0])
        stage.keyframes.append(kf)
    mesh = stage.fuse()
    v = np.asarray(mesh.vertices)
    pose = frames[0].attachments["truth"]["pose"]
    z = ((v - pose[:3, 3]) @ pose[:3, :3])[:, 2]
    assert len(v) > 500 and (z > 0).all()  # all surface in front of the camera, none from the flipped one
