"""Odometry on the synthetic sequence with known motion: accuracy, speed, failure and re-localisation."""

from __future__ import annotations

import numpy as np
import pytest

from capture.synthetic import SyntheticSource
from depth.odometry import Odometry
from depth.trajectory import ate_rmse, rpe, umeyama


@pytest.fixture(scope="module")
def frames():  # type: ignore[no-untyped-def]
    src = SyntheticSource(pace="fast", n_frames=120, seed=0)
    src.open()
    out = []
    while (f := src.read()) is not None:
        out.append(f)
    return out


def test_synthetic_trajectory_within_2cm(frames) -> None:  # type: ignore[no-untyped-def]
    odo = Odometry(frames[0].intrinsics, frames[0].depth_scale, initial_pose=frames[0].attachments["truth"]["pose"])
    est = []
    for f in frames:
        r = odo.track(f.color, f.depth)
        assert r.ok, (f.seq, r.reason)
        est.append(r.pose)
    truth = np.array([f.attachments["truth"]["pose"] for f in frames])
    assert ate_rmse(np.array(est), truth) < 0.02
    # Started at the true pose, so even without alignment the end point is close.
    assert np.linalg.norm(est[-1][:3, 3] - truth[-1][:3, 3]) < 0.05
    assert rpe(np.array(est), truth)["trans_rmse_m"] < 0.01
    assert 2 <= odo.status()["keyframes"] < len(frames) / 3
    # Speed (≤ 15 ms/frame) is measured by `python -m bench depth`, never asserted here.


def test_wrong_motion_model_is_detected(frames) -> None:  # type: ignore[no-untyped-def]
    """An identical-pose estimate for a moving camera must score badly: the metric can fail."""
    truth = np.array([f.attachments["truth"]["pose"] for f in frames])
    frozen = np.repeat(truth[:1], len(truth), axis=0)
    assert ate_rmse(frozen, truth) > 0.02


def test_lost_frame_then_relocalise(frames) -> None:  # type: ignore[no-untyped-def]
    odo = Odometry(frames[0].intrinsics, frames[0].depth_scale)
    for f in frames[:10]:
        assert odo.track(f.color, f.depth).ok
    blank = odo.track(np.zeros_like(frames[10].color), np.zeros_like(frames[10].depth))
    assert not blank.ok and "depth" in blank.reason
    results = [odo.track(f.color, f.depth) for f in frames[11:20]]
    assert results[0].ok
    assert odo.status()["lost"] == 1
    truth = np.array([f.attachments["truth"]["pose"] for f in frames[:20]])
    rel_true = np.linalg.inv(truth[0]) @ truth[19]
    assert np.linalg.norm(results[-1].pose[:3, 3] - rel_true[:3, 3]) < 0.03


def test_relocalises_to_keyframe_after_garbage_tracks(frames) -> None:  # type: ignore[no-untyped-def]
    odo = Odometry(frames[0].intrinsics, frames[0].depth_scale)
    for f in frames[:5]:
        odo.track(f.color, f.depth)
    noise = np.random.default_rng(0).integers(0, 255, size=frames[5].color.shape, dtype=np.uint8)
    bad = odo.track(noise, frames[5].depth)  # depth is fine, the image is not: tracking must fail
    assert not bad.ok
    good = odo.track(frames[6].color, frames[6].depth)
    assert good.ok and good.relocalised


def test_mismatched_frame_size_is_clear(frames) -> None:  # type: ignore[no-untyped-def]
    odo = Odometry(frames[0].intrinsics, frames[0].depth_scale)
    with pytest.raises(ValueError, match="does not match the camera 640×480"):
        odo.track(frames[0].color[::2, ::2], frames[0].depth[::2, ::2])


def test_umeyama_recovers_a_rigid_transform() -> None:
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    angle = 0.7
    r = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    dst = src @ r.T + [1, 2, 3]
    r_est, t_est, s = umeyama(src, dst)
    assert np.allclose(r_est, r) and np.allclose(t_est, [1, 2, 3]) and s == 1.0


def test_dropped_frames_scale_the_motion_prior(frames) -> None:  # type: ignore[no-untyped-def]
    """Irregular gaps (frames dropped before this stage) still track: the prior is scaled by the seq gap."""
    odo = Odometry(frames[0].intrinsics, frames[0].depth_scale, initial_pose=frames[0].attachments["truth"]["pose"])
    rng = np.random.default_rng(4)
    picked = [0]
    while picked[-1] < len(frames) - 6:
        picked.append(picked[-1] + int(rng.integers(1, 6)))
    est = []
    for i in picked:
        r = odo.track(frames[i].color, frames[i].depth, frames[i].seq)
        assert r.ok, (i, r.reason)
        est.append(r.pose)
    truth = np.array([frames[i].attachments["truth"]["pose"] for i in picked])
    assert ate_rmse(np.array(est), truth) < 0.02


def test_scale_motion() -> None:
    from depth.odometry import scale_motion

    m = np.eye(4)
    angle = 0.1
    m[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    m[:3, 3] = [0.01, 0, 0.02]
    twice = scale_motion(m, 2.0)
    assert np.allclose(twice[:3, :3], m[:3, :3] @ m[:3, :3]) and np.allclose(twice[:3, 3], [0.02, 0, 0.04])
    assert np.allclose(scale_motion(m, 0.0), np.eye(4))


def test_blank_start_bootstraps_when_structure_appears(frames) -> None:  # type: ignore[no-untyped-def]
    odo = Odometry(frames[0].intrinsics, frames[0].depth_scale)
    for _ in range(3):
        r = odo.track(np.zeros_like(frames[0].color), frames[0].depth)  # lens covered, depth fine
        assert not r.ok
    first = odo.track(frames[0].color, frames[0].depth)
    assert first.keyframe and first.segment == 0
    results = [odo.track(f.color, f.depth) for f in frames[1:10]]
    assert all(r.ok for r in results)


def test_lost_for_good_starts_a_new_segment(frames) -> None:  # type: ignore[no-untyped-def]
    odo = Odometry(frames[0].intrinsics, frames[0].depth_scale)
    for f in frames[:5]:
        assert odo.track(f.color, f.depth).ok
    rng = np.random.default_rng(1)
    results = [odo.track(rng.integers(0, 255, size=f.color.shape, dtype=np.uint8), f.depth) for f in frames[5:25]]
    assert not any(r.ok for r in results)
    new = [r for r in results if r.keyframe]
    assert new and new[0].segment == 1 and "new map segment" in new[0].reason
    assert odo.status()["new_segments"] >= 1
