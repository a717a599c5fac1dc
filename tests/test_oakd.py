"""OAK-D adapter at the depthai boundary, without a device: calibration parsing from a real
`dai.CalibrationHandler` (built and round-tripped through its EEPROM JSON), and frame conversion from
real `dai.ImgFrame`s in the formats the device sends."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import numpy as np
import pytest

dai = pytest.importorskip("depthai")

from capture.frame import SourceError  # noqa: E402
from capture.oakd import frame_from_messages, intrinsics_from_calibration, list_devices  # noqa: E402
from capture.synthetic import SyntheticSource  # noqa: E402

CAM_A = dai.CameraBoardSocket.CAM_A
# An OAK-D colour camera as calibrated at 1920×1080 (numbers of the order a real EEPROM holds).
K_FULL = [[1490.0, 0.0, 955.5], [0.0, 1489.0, 541.0], [0.0, 0.0, 1.0]]
D_FULL = [-0.21, 0.05, 0.0004, -0.0002, 0.001, 0.0, 0.0, 0.0] + [0.0] * 6


def calibration(tmp_path: Path, coeffs: list[float] = D_FULL) -> object:
    calib = dai.CalibrationHandler()
    calib.setCameraIntrinsics(CAM_A, K_FULL, dai.Size2f(1920, 1080))
    calib.setDistortionCoefficients(CAM_A, coeffs)
    calib.setCameraType(CAM_A, dai.CameraModel.Perspective)
    path = tmp_path / "eeprom.json"
    calib.eepromToJsonFile(str(path))  # what `readCalibration` gives, via the SDK's own serialisation
    return dai.CalibrationHandler(str(path))


def test_intrinsics_scaled_from_the_eeprom_calibration(tmp_path: Path) -> None:
    calib = calibration(tmp_path)
    intr = intrinsics_from_calibration(dai, calib, 640, 360)  # same aspect: a pure scale by 1/3
    assert (intr.width, intr.height) == (640, 360)
    assert intr.fx == pytest.approx(1490.0 / 3, rel=1e-4) and intr.fy == pytest.approx(1489.0 / 3, rel=1e-4)
    assert intr.cx == pytest.approx(955.5 / 3, abs=0.5) and intr.cy == pytest.approx(541.0 / 3, abs=0.5)
    assert intr.distortion == pytest.approx(tuple(D_FULL[:8]))
    cropped = intrinsics_from_calibration(dai, calib, 640, 400)  # 16:10 from 16:9: the SDK crops, fx stays
    assert cropped.fx == pytest.approx(cropped.fy, rel=0.01) and cropped.height == 400


def test_calibration_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no calibration for"):
        intrinsics_from_calibration(dai, dai.CalibrationHandler(), 640, 400)
    tilted = calibration(tmp_path, D_FULL[:12] + [0.01, 0.0])
    with pytest.raises(SourceError, match="thin-prism/tilt"):
        intrinsics_from_calibration(dai, tilted, 640, 360)


def _img(array: np.ndarray, kind: object, seq: int, ts: datetime.timedelta) -> object:
    msg = dai.ImgFrame()
    if kind == dai.ImgFrame.Type.RAW16:
        msg.setFrame(array)
        msg.setWidth(array.shape[1])
        msg.setHeight(array.shape[0])
        msg.setType(kind)
    else:
        msg.setCvFrame(array, kind)
    msg.setSequenceNum(seq)
    msg.setTimestamp(ts)
    msg.setTimestampDevice(ts - datetime.timedelta(seconds=100))
    return msg


@pytest.mark.parametrize("kind,tolerance", [("BGR888i", 0), ("BGR888p", 0), ("NV12", 12)])
def test_frame_conversion_from_device_formats(tmp_path: Path, kind: str, tolerance: int) -> None:
    src = SyntheticSource(640, 400, pace="fast").read()
    assert src is not None
    intr = intrinsics_from_calibration(dai, calibration(tmp_path), 640, 400)
    now = datetime.timedelta(microseconds=time.monotonic_ns() // 1000)
    color_msg = _img(src.color, dai.ImgFrame.Type.__members__[kind], 7, now - datetime.timedelta(milliseconds=30))
    depth_msg = _img(src.depth, dai.ImgFrame.Type.RAW16, 7, now - datetime.timedelta(milliseconds=32))
    frame = frame_from_messages(dai, color_msg, depth_msg, seq=3, device_id="oak", session_id="s1", intrinsics=intr)
    assert frame.color.shape == (400, 640, 3) and frame.color.dtype == np.uint8
    assert np.percentile(np.abs(frame.color.astype(int) - src.color), 50) <= tolerance  # NV12: chroma subsampled
    assert np.array_equal(frame.depth, src.depth) and frame.depth_scale == 1000.0
    assert frame.intrinsics == intr and frame.seq == 3
    meta = frame.attachments["oakd"]
    assert meta["color_seq"] == 7 and meta["depth_lag_ms"] == pytest.approx(2.0, abs=0.01)
    # device capture time on the host's monotonic clock, not the arrival time
    captured_ns = (now - datetime.timedelta(milliseconds=30)) // datetime.timedelta(microseconds=1) * 1000
    assert frame.t_mono_ns == captured_ns
    assert abs(frame.t_utc - (time.time() - (time.monotonic_ns() - captured_ns) / 1e9)) < 0.01


def test_depth_of_another_size_is_resized_and_wrong_type_refused(tmp_path: Path) -> None:
    src = SyntheticSource(640, 400, pace="fast").read()
    assert src is not None
    ts = datetime.timedelta(seconds=1)
    intr = intrinsics_from_calibration(dai, calibration(tmp_path), 640, 400)
    color_msg = _img(src.color, dai.ImgFrame.Type.BGR888i, 1, ts)
    small = _img(np.ascontiguousarray(src.depth[::2, ::2]), dai.ImgFrame.Type.RAW16, 1, ts)
    frame = frame_from_messages(dai, color_msg, small, seq=0, device_id="oak", session_id="s", intrinsics=intr)
    assert frame.depth.shape == (400, 640) and np.array_equal(frame.depth[::2, ::2], src.depth[::2, ::2])
    with pytest.raises(SourceError, match="expected RAW16"):
        frame_from_messages(dai, color_msg, color_msg, seq=0, device_id="oak", session_id="s", intrinsics=intr)


def test_listing_without_devices_is_empty() -> None:
    if dai.Device.getAllAvailableDevices():
        pytest.skip("an OAK device is attached")
    assert list_devices() == []
