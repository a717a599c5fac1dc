import numpy as np
import pytest

from capture.frame import Intrinsics, RGBDFrame


def make(**kw):
    h, w = kw.pop("h", 48), kw.pop("w", 64)
    args = dict(device_id="d", session_id="s", seq=0, t_mono_ns=1, t_utc=1.0,
                color=np.zeros((h, w, 3), np.uint8), depth=np.zeros((h, w), np.uint16), depth_scale=1000.0,
                intrinsics=Intrinsics(w, h, 50.0, 50.0, w / 2, h / 2))
    args.update(kw)
    return RGBDFrame(**args)


def test_valid_frame_shares_arrays():
    f = make()
    g = f.replace(seq=5)
    assert g.seq == 5 and g.color is f.color and g.size == (64, 48)


@pytest.mark.parametrize("field,value,needle", [
    ("color", np.zeros((48, 64, 3), np.float32), "color"),
    ("color", np.zeros((48, 64), np.uint8), "color"),
    ("depth", np.zeros((48, 64), np.float32), "depth"),
    ("depth", np.zeros((40, 64), np.uint16), "depth"),
    ("depth_scale", 0.0, "depth_scale"),
    ("depth_scale", float("nan"), "depth_scale"),
    ("seq", -1, "seq"),
    ("device_id", "", "device_id"),
    ("pose", np.eye(3), "pose"),
    ("pose", np.full((4, 4), np.nan), "pose"),
    ("intrinsics", Intrinsics(32, 48, 50.0, 50.0, 1.0, 1.0), "intrinsics"),
])
def test_invalid_frames_name_the_field(field, value, needle):
    with pytest.raises(ValueError, match=needle):
        make(**{field: value})


@pytest.mark.parametrize("kw,needle", [
    (dict(fx=float("inf")), "fx"), (dict(cy=float("nan")), "cy"), (dict(width=0), "width"),
    (dict(fx=-1.0), "fx"), (dict(distortion=(1.0, 2.0)), "distortion"),
])
def test_invalid_intrinsics(kw, needle):
    args = dict(width=64, height=48, fx=50.0, fy=50.0, cx=32.0, cy=24.0) | kw
    with pytest.raises(ValueError, match=needle):
        Intrinsics(**args)


def test_intrinsics_scaled_matrix():
    k = Intrinsics(640, 480, 525.0, 525.0, 319.5, 239.5).scaled(320, 240)
    assert np.allclose(k.matrix(), [[262.5, 0, 159.75], [0, 262.5, 119.75], [0, 0, 1]])
