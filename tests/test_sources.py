import json

import numpy as np
import pytest

from capture import open_source, tum
from capture.frame import Intrinsics
from capture.replay import ReplaySource
from capture.synthetic import SyntheticSource


def test_synthetic_is_deterministic_and_has_faces():
    a = SyntheticSource(pace="fast", seed=3, n_frames=3)
    b = SyntheticSource(pace="fast", seed=3, n_frames=3)
    fa, fb = [a.read() for _ in range(3)], [b.read() for _ in range(3)]
    assert a.read() is None
    for x, y in zip(fa, fb, strict=True):
        assert np.array_equal(x.color, y.color) and np.array_equal(x.depth, y.depth)
    f = fa[0]
    assert f.color.shape == (480, 640, 3) and f.depth.dtype == np.uint16
    faces = f.attachments["truth"]["faces"]
    assert len(faces) >= 2
    for x1, y1, x2, y2 in faces:  # a face box holds face texture with valid depth in front of the far wall
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
        assert np.median(f.depth[y1:y2, x1:x2]) < 6500
    assert 0.001 < np.mean(f.depth == 0) < 0.2
    poses = [fr.attachments["truth"]["pose"] for fr in fa]
    assert not np.allclose(poses[0], poses[2])  # the camera moves


def test_synthetic_other_resolution():
    f = SyntheticSource(width=320, height=240, pace="fast").read()
    assert f.size == (320, 240) and f.intrinsics.fx == pytest.approx(262.5)


def _write_tum(tmp_path, n=5, camera=None, depth_offset=0.004):
    src = SyntheticSource(width=160, height=120, pace="fast", n_frames=n)
    w = tum.TumWriter(tmp_path)
    frames = []
    while (f := src.read()) is not None:
        f = f.replace(t_utc=1000.0 + f.seq / 30.0, pose=f.attachments["truth"]["pose"])
        w.append(f)
        frames.append(f)
    w.close()
    # shift depth stamps so association has real work to do
    lines = (tmp_path / "depth.txt").read_text().splitlines()
    out = [ln if ln.startswith("#") else f"{float(ln.split()[0]) + depth_offset:.6f} {ln.split()[1]}" for ln in lines]
    (tmp_path / "depth.txt").write_text("\n".join(out) + "\n")
    if camera is not None:
        (tmp_path / "camera.json").write_text(json.dumps(camera))
    return frames


def test_replay_round_trip(tmp_path):
    frames = _write_tum(tmp_path)
    src = open_source(f"replay:{tmp_path}", pace="fast")
    got = []
    while (f := src.read()) is not None:
        got.append(f)
    assert len(got) == len(frames)
    for a, b in zip(frames, got, strict=True):
        # depth is stored at TUM's 5000/m: the same metres (mm × 5 exactly)
        assert np.array_equal(a.color, b.color) and np.array_equal(a.depth.astype(np.uint32) * 5, b.depth)
        assert np.allclose(a.pose, b.attachments["truth"]["pose"], atol=1e-5)
    assert got[0].intrinsics == frames[0].intrinsics and got[0].depth_scale == 5000.0
    assert src.fps == pytest.approx(30.0, rel=0.01)


def test_association_drops_far_stamps():
    pairs = tum.associate(np.array([0.0, 0.1, 0.2, 0.3]), np.array([0.005, 0.19, 0.35, 0.36]))
    assert pairs == [(0, 0), (2, 1)]


def test_camera_json_schemas(tmp_path):
    p = tmp_path / "camera.json"
    assert tum.read_camera_json(p) == (tum.TUM_DEFAULT_INTRINSICS, 5000.0)
    p.write_text(json.dumps({"width": 640, "height": 480, "intrinsic_matrix": [500, 0, 0, 0, 501, 0, 320, 240, 1]}))
    intr, _ = tum.read_camera_json(p)
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (500, 501, 320, 240)
    p.write_text(json.dumps({"width": 640, "height": 480, "fx": 1, "fy": 1, "cx": 1, "cy": 1,
                             "depth_scale": 1000, "distortion": [0.1, 0, 0, 0, 0]}))
    intr, scale = tum.read_camera_json(p)
    assert intr.distortion == (0.1, 0, 0, 0, 0) and scale == 1000
    p.write_text(json.dumps({"focal": 3}))
    with pytest.raises(tum.LayoutError, match="unknown camera schema"):
        tum.read_camera_json(p)
    p.write_text(json.dumps({"width": 640, "height": 480, "fx": "x", "fy": 1, "cx": 1, "cy": 1}))
    with pytest.raises(ValueError, match="camera.json"):
        tum.read_camera_json(p)


def test_replay_clear_errors(tmp_path):
    with pytest.raises(tum.LayoutError, match="rgb.txt"):
        ReplaySource(tmp_path)
    (tmp_path / "rgb.txt").write_text("1.0 rgb/a.png\nbroken\n")
    (tmp_path / "depth.txt").write_text("1.0 depth/a.png\n")
    with pytest.raises(tum.LayoutError, match=r"rgb.txt:2"):
        ReplaySource(tmp_path)
    with pytest.raises(ValueError, match="unknown source"):
        open_source("webcam")


def test_pose_tum_round_trip():
    from capture.synthetic import trajectory_pose

    for t in (0.0, 1.3, 4.2):
        p = trajectory_pose(t)
        assert np.allclose(tum.pose_from_tum(tum.pose_to_tum(p)), p, atol=1e-9)
    assert Intrinsics(640, 480, 525.0, 525.0, 319.5, 239.5) == tum.TUM_DEFAULT_INTRINSICS


def test_replay_skips_an_unreadable_pair(tmp_path):
    """A corrupt image in a replay is a counted source fault and is skipped, not retried forever."""
    from capture.frame import SourceError
    from device.pipeline import Pipeline

    _write_tum(tmp_path, n=4)
    rgb = sorted((tmp_path / "rgb").iterdir())
    rgb[1].write_bytes(b"not a png")
    depth = sorted((tmp_path / "depth").iterdir())
    import cv2
    cv2.imwrite(str(depth[2]), np.zeros((60, 80), np.uint16))  # wrong size for the colour
    src = ReplaySource(tmp_path, pace="fast")
    got = []
    for _ in range(6):
        try:
            f = src.read()
        except SourceError as e:
            got.append(str(e))
            continue
        got.append(f)
    assert [type(g) for g in got[:5]] == [type(got[0]), str, str, type(got[0]), type(None)]
    assert "cannot read" in got[1] and "does not match" in got[2]

    class Sink:
        name = "sink"

        def __init__(self):
            self.seen = []

        def apply(self, frame):
            self.seen.append(frame.seq)
            return frame

    sink = Sink()
    p = Pipeline(ReplaySource(tmp_path, pace="fast"), [sink])
    assert p.run(timeout=20), "replay with a bad file never finished"
    assert len(sink.seen) == 2 and p.snapshot()["stages"]["capture"]["errors"] == {"SourceError": 2}


def test_tum_writer_failed_image_is_an_error_not_a_listed_gap(tmp_path):
    frame = SyntheticSource(width=160, height=120, pace="fast", n_frames=1).read()
    frame = frame.replace(t_utc=1000.0)
    w = tum.TumWriter(tmp_path)
    (tmp_path / "depth" / "1000.000000.png").mkdir()  # the image cannot be written there
    with pytest.raises(OSError, match="cannot write"):
        w.append(frame)
    w.close()
    assert not (tmp_path / "rgb.txt").exists() and w.frames == 0
