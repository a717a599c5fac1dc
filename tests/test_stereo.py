"""Stereo source on synthetic pairs rendered from the scene with known depth, plus calibration errors.

Run with `-s` to see the measured depth error as JSON lines ("stereo_depth_error").
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from capture.frame import Intrinsics, SourceError
from capture.scene import Renderer, build_scene
from capture.stereo import CalibrationError, StereoCalibration, StereoSource
from capture.synthetic import trajectory_pose

INTR = Intrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)
BASELINE = 0.08  # metres, a typical wearable stereo head


def _pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rotation, translation
    return m


def _distort(image: np.ndarray, K: np.ndarray, D: np.ndarray) -> np.ndarray:
    """What a lens with distortion D sees, given the ideal pinhole image for K."""
    if not np.any(D):
        return image
    h, w = image.shape[:2]
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    pts = np.stack([u.ravel(), v.ravel()], 1)[:, None, :]
    ideal = cv2.undistortPoints(pts, K, D, None, None, K, (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-6))
    maps = ideal.reshape(h, w, 2)
    return cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def render_pair(calib: StereoCalibration, quads: list, world_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw (distorted) left and right images of the scene for a rig whose left camera is at world_pose."""
    def intr(K: np.ndarray) -> Intrinsics:
        return Intrinsics(calib.size[0], calib.size[1], K[0, 0], K[1, 1], K[0, 2], K[1, 2])

    left = Renderer(quads, intr(calib.K1)).render(world_pose)[0]
    # X_right = R·X_left + T  ⇒  right camera-to-left = [Rᵀ | −RᵀT]
    right_pose = world_pose @ _pose(calib.R.T, -calib.R.T @ calib.T)
    right = Renderer(quads, intr(calib.K2)).render(right_pose)[0]
    return _distort(left, calib.K1, calib.D1), _distort(right, calib.K2, calib.D2)


def depth_error(source: StereoSource, quads: list, world_pose: np.ndarray, depth_mm: np.ndarray) -> dict:
    """Errors against the true depth seen by the *rectified* left camera (its rotation R1, its intrinsics)."""
    rect = source.rectifier
    truth = Renderer(quads, rect.intrinsics).render(world_pose @ _pose(rect.R1.T, np.zeros(3)))[1] * 1000.0
    known = truth > 0
    valid = known & (depth_mm > 0)
    err = np.abs(depth_mm[valid].astype(np.float64) - truth[valid])
    rel = err / truth[valid]
    return {"coverage": round(float(valid.sum() / known.sum()), 3),
            "median_mm": round(float(np.median(err)), 1), "p90_mm": round(float(np.percentile(err, 90)), 1),
            "median_rel": round(float(np.median(rel)), 4), "p90_rel": round(float(np.percentile(rel, 90)), 4),
            "bias_mm": round(float(np.median(depth_mm[valid] - truth[valid])), 1)}


def write_pairs(calib: StereoCalibration, tmp: Path, times: list[float], seed: int = 0) -> tuple[Path, list]:
    """Image folders left/ right/ and a config naming them; returns (config path, world poses)."""
    quads = build_scene(seed)
    (tmp / "left").mkdir()
    (tmp / "right").mkdir()
    poses = []
    for i, t in enumerate(times):
        pose = trajectory_pose(t)
        left, right = render_pair(calib, quads, pose)
        cv2.imwrite(str(tmp / "left" / f"{i:04d}.png"), left)
        cv2.imwrite(str(tmp / "right" / f"{i:04d}.png"), right)
        poses.append(pose)
    config = tmp / "stereo.yaml"
    calib.save(config, left="left", right="right")
    return config, poses


def ideal_calibration() -> StereoCalibration:
    K = INTR.matrix()
    return StereoCalibration(K, np.zeros(5), K, np.zeros(5), np.eye(3), np.array([-BASELINE, 0, 0]), (640, 480))


def real_calibration() -> StereoCalibration:
    """Two slightly different lenses with distortion, a rig rotated by ~1°: what stereoCalibrate gives."""
    K1 = np.array([[530.0, 0, 322.0], [0, 528.0, 236.0], [0, 0, 1]])
    K2 = np.array([[522.0, 0, 316.0], [0, 521.0, 243.0], [0, 0, 1]])
    D1 = np.array([-0.12, 0.03, 0.0005, -0.0003, 0.0])
    D2 = np.array([-0.10, 0.02, -0.0004, 0.0002, 0.0])
    R = cv2.Rodrigues(np.array([0.004, -0.015, 0.006]))[0]
    return StereoCalibration(K1, D1, K2, D2, R, np.array([-BASELINE, 0.0015, 0.001]), (640, 480))


@pytest.mark.parametrize("name,calibration", [("ideal", ideal_calibration), ("distorted", real_calibration)])
def test_depth_error_on_synthetic_pairs(tmp_path: Path, name: str, calibration) -> None:
    calib = calibration()
    config, poses = write_pairs(calib, tmp_path, [0.0, 2.7])
    source = StereoSource(config, device_id="stereo-test")
    source.open()
    quads = build_scene(0)
    results = []
    for pose in poses:
        frame = source.read()
        assert frame is not None
        assert frame.intrinsics == source.intrinsics and frame.intrinsics.distortion == ()
        assert frame.depth_scale == 1000.0 and frame.color.shape == (480, 640, 3)
        results.append({**depth_error(source, quads, pose, frame.depth), "ms": frame.attachments["stereo"]["ms"]})
    assert source.read() is None  # end of the folders
    source.close()
    summary = {k: round(float(np.mean([r[k] for r in results])), 4) for k in results[0]}
    print(json.dumps({"stereo_depth_error": name, "baseline_m": BASELINE, **summary}))
    # SGBM at 8 cm baseline, scene at 1.2-7 m: ~1 % median, few % at p90; a broken rectification
    # (swapped maps, wrong baseline, wrong R1) gives tens of percent.
    assert summary["coverage"] > 0.7
    assert summary["median_rel"] < 0.025
    assert summary["p90_rel"] < 0.08
    assert abs(summary["bias_mm"]) < 60


def test_depth_is_registered_to_rectified_left(tmp_path: Path) -> None:
    """The known person nearest the camera appears at the right pixel and depth in the left image."""
    config, poses = write_pairs(ideal_calibration(), tmp_path, [0.0])
    source = StereoSource(config)
    frame = source.read()
    assert frame is not None
    truth_color, truth_z, _ = Renderer(build_scene(0), source.intrinsics).render(poses[0])
    assert np.mean(np.abs(frame.color.astype(int) - truth_color.astype(int))) < 3
    centre = (slice(200, 280), slice(300, 340))
    assert abs(float(np.median(frame.depth[centre])) - float(np.median(truth_z[centre]) * 1000)) < 50


def test_json_calibration_with_plain_lists(tmp_path: Path) -> None:
    K = INTR.matrix().tolist()
    cfg = {"K1": K, "D1": [0, 0, 0, 0, 0], "K2": [v for row in K for v in row], "D2": [0, 0, 0, 0, 0],
           "R": np.eye(3).tolist(), "T": [-80, 0, 0], "units": "mm", "size": [640, 480], "left": "0", "right": "1"}
    (tmp_path / "cam.json").write_text(json.dumps(cfg))
    calib, fs = StereoCalibration.load(tmp_path / "cam.json")
    fs.release()
    assert calib.baseline == pytest.approx(0.08)
    assert np.allclose(calib.K2, INTR.matrix())


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text("%YAML:1.0\n---\n" + text)
    return p


GOOD = ("K1: !!opencv-matrix\n   rows: 3\n   cols: 3\n   dt: d\n   data: [525., 0., 320., 0., 525., 240., 0., 0., 1.]\n"
        "K2: !!opencv-matrix\n   rows: 3\n   cols: 3\n   dt: d\n   data: [525., 0., 320., 0., 525., 240., 0., 0., 1.]\n"
        "R: [1., 0., 0., 0., 1., 0., 0., 0., 1.]\nsize: [640, 480]\nleft: \"0\"\nright: \"1\"\n")


@pytest.mark.parametrize("text,message", [
    (GOOD, "T: missing"),
    (GOOD + "T: [-0.08, 0., 0.]\nunits: inch\n", "units: expected one of"),
    (GOOD + "T: [-80., 0., 0.]\n", "baseline 80 m is implausible"),
    (GOOD + "T: [0., -0.08, 0.]\n", "stacked vertically"),
    (GOOD + "T: [0.08, 0., 0.]\n", "swap left and right"),
    (GOOD.replace("size: [640, 480]", "size: [640.5, 480]") + "T: [-0.08, 0., 0.]\n", "size: expected"),
    (GOOD.replace("R: [1., 0., 0.,", "R: [2., 0., 0.,") + "T: [-0.08, 0., 0.]\n", "R: not a rotation"),
    (GOOD.replace('left: "0"\n', "") + "T: [-0.08, 0., 0.]\n", "left/right: both are needed"),
    (GOOD.replace("data: [525., 0., 320.,", "data: [525., 0.,") + "T: [-0.08, 0., 0.]\n", "K1"),
])
def test_bad_calibration_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        StereoSource(_yaml(tmp_path, text))


def test_unreadable_calibration_files(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="not found"):
        StereoSource(tmp_path / "nope.yaml")
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(b"\x00\xff{{{not yaml: [")
    with pytest.raises(CalibrationError, match="garbage.yaml"):
        StereoSource(garbage)


def test_image_size_mismatch_is_a_clear_source_error(tmp_path: Path) -> None:
    config, _ = write_pairs(ideal_calibration(), tmp_path, [0.0])
    for side in ("left", "right"):
        cv2.imwrite(str(tmp_path / side / "0000.png"), np.zeros((240, 320, 3), np.uint8))
    with pytest.raises(SourceError, match="left image is 320×240, calibration is 640×480"):
        StereoSource(config).read()


def test_side_by_side_video_file(tmp_path: Path) -> None:
    """One camera delivering left|right in one frame (cheap USB stereo heads), here as a video file."""
    calib = ideal_calibration()
    quads = build_scene(0)
    video = tmp_path / "sbs.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"FFV1"), 10.0, (1280, 480))
    assert writer.isOpened()
    for t in (0.0, 0.1, 0.2):
        left, right = render_pair(calib, quads, trajectory_pose(t))
        writer.write(np.hstack([left, right]))
    writer.release()
    config = tmp_path / "sbs.yaml"
    calib.save(config, sbs="sbs.avi")
    source = StereoSource(config)
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert [f.seq for f in frames] == [0, 1, 2]
    err = depth_error(source, quads, trajectory_pose(0.0), frames[0].depth)
    assert err["coverage"] > 0.7 and err["median_rel"] < 0.025  # FFV1 is lossless


def test_unplugged_camera_is_a_source_error(tmp_path: Path) -> None:
    config = tmp_path / "cams.yaml"
    ideal_calibration().save(config, left="/dev/video98", right="/dev/video99")
    source = StereoSource(config)
    with pytest.raises(SourceError, match="left camera /dev/video98: cannot open"):
        source.open()
    with pytest.raises(SourceError, match="cannot open"):
        source.read()  # still closed: read retries the open and fails the same way


def test_unreadable_pair_in_a_folder_is_skipped(tmp_path: Path) -> None:
    """A corrupt image (the folder itself is there) is one counted SourceError and skipped; it used
    to be retried forever, so the pipeline never finished."""
    from device.pipeline import Pipeline

    config, _ = write_pairs(ideal_calibration(), tmp_path, [0.0, 0.1, 0.2])
    (tmp_path / "left" / "0001.png").write_bytes(b"not a png")

    class Collect:
        name = "collect"

        def __init__(self) -> None:
            self.seqs: list[int] = []

        def apply(self, frame):
            self.seqs.append(frame.seq)
            return frame

    sink = Collect()
    p = Pipeline(StereoSource(config), [sink], capture_queue=64)
    assert p.run(timeout=30), "a bad image in a stereo folder stalled the pipeline"
    assert sink.seqs == [0, 1] and p.snapshot()["stages"]["capture"]["errors"] == {"SourceError": 1}
