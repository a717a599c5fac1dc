"""`oakd[:ID]` source: Luxonis OAK-D through depthai v3 (extra `oakd`).

On the device: the colour camera (CAM_A), the two mono cameras into `StereoDepth` with depth aligned
to CAM_A and scaled to the colour size, and a `Sync` node pairing depth with colour by timestamp.
On the host: `frame_from_messages` turns the synced pair into an RGBDFrame (BGR, depth in mm), with
the device timestamp mapped onto the host's monotonic clock; `intrinsics_from_calibration` reads the
colour camera's intrinsics (at the output size) and distortion from the device's EEPROM calibration.

Only the SDK-boundary functions are tested here (no device on the CI machine); `OakDSource.open`
and `read` have not been run against a camera — see docs/hardware.md.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import cv2
import numpy as np

from capture.config import ConfigError
from capture.frame import Intrinsics, RGBDFrame, SourceError

DEPTH_SCALE = 1000.0  # StereoDepth outputs millimetres
COLOR, DEPTH = "color", "depth"


def import_dai() -> Any:
    try:
        import depthai as dai
    except ImportError:
        raise ConfigError("source: oakd needs depthai: pip install 'crowdcap[oakd]'") from None
    return dai


def intrinsics_from_calibration(dai: Any, calib: Any, width: int, height: int,
                                socket: Any = None) -> Intrinsics:
    """Intrinsics of `socket` (default CAM_A, the colour camera) at width×height, from the device's
    calibration. Perspective-model coefficients are OpenCV's order (k1 k2 p1 p2 k3 k4 k5 k6 s1..s4 τx τy);
    the first 8 are kept, and the thin-prism/tilt terms must be zero (they are on OAK-D)."""
    socket = dai.CameraBoardSocket.CAM_A if socket is None else socket
    if not calib.hasCameraCalibration(socket):
        raise SourceError(f"oakd: no calibration for {socket} in the device EEPROM (recalibrate the device)")
    k = np.asarray(calib.getCameraIntrinsics(socket, width, height), np.float64)
    if k.shape != (3, 3) or not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise SourceError(f"oakd: calibration of {socket} has an unusable camera matrix {k.tolist()}")
    model = calib.getDistortionModel(socket)
    coeffs = [float(c) for c in calib.getDistortionCoefficients(socket)]
    if model != dai.CameraModel.Perspective:
        raise SourceError(f"oakd: {socket} uses the {model} lens model; only Perspective maps to OpenCV's")
    if any(abs(c) > 1e-9 for c in coeffs[8:]):
        raise SourceError(f"oakd: {socket} has thin-prism/tilt distortion terms that Intrinsics cannot hold")
    distortion = tuple(coeffs[:8]) if any(coeffs[:8]) else ()
    return Intrinsics(width, height, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), distortion)


def _timedelta_ns(td: datetime.timedelta) -> int:
    return (td.days * 86_400 + td.seconds) * 1_000_000_000 + td.microseconds * 1_000


def frame_from_messages(dai: Any, color_msg: Any, depth_msg: Any, *, seq: int, device_id: str, session_id: str,
                        intrinsics: Intrinsics) -> RGBDFrame:
    """One RGBDFrame from a synced colour + depth ImgFrame pair.

    `getTimestamp()` is the device capture time already translated to the host's steady clock, which on
    Linux is CLOCK_MONOTONIC — the clock `t_mono_ns` uses. UTC is derived from it, not from arrival.
    """
    if depth_msg.getType() != dai.ImgFrame.Type.RAW16:
        raise SourceError(f"oakd: depth arrived as {depth_msg.getType()}, expected RAW16 millimetres")
    color = color_msg.getCvFrame()  # the SDK converts NV12 / planar / interleaved to BGR
    if color.ndim == 2:
        color = cv2.cvtColor(color, cv2.COLOR_GRAY2BGR)
    depth = np.asarray(depth_msg.getFrame())
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise SourceError(f"oakd: depth frame is {depth.dtype} {depth.shape}, expected uint16 H×W")
    h, w = color.shape[:2]
    if depth.shape != (h, w):  # StereoDepth was asked for the colour size; tolerate a mismatch exactly
        depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
    if (intrinsics.width, intrinsics.height) != (w, h):
        intrinsics = intrinsics.scaled(w, h)
    t_mono = _timedelta_ns(color_msg.getTimestamp())
    t_utc = time.time() - (time.monotonic_ns() - t_mono) / 1e9
    meta = {"t_device_ns": _timedelta_ns(color_msg.getTimestampDevice()), "color_seq": color_msg.getSequenceNum(),
            "depth_seq": depth_msg.getSequenceNum(),
            "depth_lag_ms": round((_timedelta_ns(color_msg.getTimestamp()) - _timedelta_ns(depth_msg.getTimestamp()))
                                  / 1e6, 3)}
    return RGBDFrame(device_id, session_id, seq, t_mono, t_utc, np.ascontiguousarray(color), depth, DEPTH_SCALE,
                     intrinsics, attachments={"oakd": meta})


class OakDSource:
    """Aligned RGB-D from an OAK-D. `target`: a device id (MXID) or IP, or None for the first found."""

    def __init__(self, target: str | None = None, width: int = 640, height: int = 400, fps: float = 30.0,
                 device_id: str = "oakd", session_id: str = "s0", n_frames: int | None = None, *,
                 preset: str = "DEFAULT", timeout_s: float = 2.0) -> None:
        self.dai = import_dai()
        if preset not in self.dai.node.StereoDepth.PresetMode.__members__:
            raise ConfigError(f"preset: expected one of {', '.join(self.dai.node.StereoDepth.PresetMode.__members__)}, "
                              f"got {preset!r}")
        self.target = target
        self.width, self.height, self.fps = width, height, float(fps)
        self.device_id, self.session_id, self.n_frames = device_id, session_id, n_frames
        self.preset, self.timeout_s = preset, timeout_s
        self.intrinsics = Intrinsics(width, height, 1.0, 1.0, width / 2, height / 2)  # replaced on open
        self.depth_scale = DEPTH_SCALE
        self.info: dict[str, str] = {}
        self._device: Any = None
        self._pipeline: Any = None
        self._queue: Any = None
        self._seq = 0

    @property
    def name(self) -> str:
        return f"oakd {self.target or '(first found)'}"

    def open(self) -> None:
        dai = self.dai
        try:
            device = dai.Device(dai.DeviceInfo(self.target)) if self.target else dai.Device()
        except RuntimeError as e:
            raise SourceError(f"{self.name}: cannot connect ({e}); plugged in? udev rules installed?") from None
        try:
            self.info = {"id": device.getDeviceId(), "name": device.getDeviceName(),
                         "usb": str(device.getUsbSpeed()).rsplit(".", 1)[-1]}
            self.intrinsics = intrinsics_from_calibration(dai, device.readCalibration(), self.width, self.height)
            pipeline = dai.Pipeline(device)
            size = (self.width, self.height)
            color = pipeline.create(dai.node.Camera).build(dai.CameraBoardSocket.CAM_A, sensorFps=self.fps)
            left = pipeline.create(dai.node.Camera).build(dai.CameraBoardSocket.CAM_B, sensorFps=self.fps)
            right = pipeline.create(dai.node.Camera).build(dai.CameraBoardSocket.CAM_C, sensorFps=self.fps)
            stereo = pipeline.create(dai.node.StereoDepth)
            stereo.setDefaultProfilePreset(dai.node.StereoDepth.PresetMode.__members__[self.preset])
            left.requestOutput(size, fps=self.fps).link(stereo.left)
            right.requestOutput(size, fps=self.fps).link(stereo.right)
            stereo.setDepthAlign(dai.CameraBoardSocket.CAM_A)
            stereo.setOutputSize(*size)
            sync = pipeline.create(dai.node.Sync)
            sync.setSyncThreshold(datetime.timedelta(seconds=0.5 / self.fps))
            color.requestOutput(size, dai.ImgFrame.Type.BGR888i, fps=self.fps).link(sync.inputs[COLOR])
            stereo.depth.link(sync.inputs[DEPTH])
            self._queue = sync.out.createOutputQueue(maxSize=4, blocking=False)
            pipeline.start()
        except RuntimeError as e:
            device.close()
            raise SourceError(f"{self.name}: pipeline failed to start: {e}") from None
        self._device, self._pipeline = device, pipeline

    def read(self) -> RGBDFrame | None:
        if self.n_frames is not None and self._seq >= self.n_frames:
            return None
        if self._pipeline is None:
            self.open()
        try:
            group = self._queue.get(datetime.timedelta(seconds=self.timeout_s))
        except RuntimeError as e:  # XLink errors when the device is unplugged or resets
            raise SourceError(f"{self.name}: {e}") from None
        if group is None:
            raise SourceError(f"{self.name}: no frames for {self.timeout_s:.1f} s (unplugged or USB reset?)")
        frame = frame_from_messages(self.dai, group[COLOR], group[DEPTH], seq=self._seq, device_id=self.device_id,
                                    session_id=self.session_id, intrinsics=self.intrinsics)
        self._seq += 1
        return frame

    def close(self) -> None:
        pipeline, device = self._pipeline, self._device
        self._pipeline = self._device = self._queue = None
        for stop in ((pipeline.stop if pipeline else None), (device.close if device else None)):
            if stop is not None:
                try:
                    stop()
                except RuntimeError:  # already gone
                    pass


def list_devices() -> list[dict[str, Any]]:
    """OAK devices visible to depthai (USB and PoE), without connecting to them. [] without the SDK."""
    try:
        import depthai as dai
    except ImportError:
        return []
    out = []
    for info in dai.Device.getAllAvailableDevices():
        out.append({"kind": "oakd", "id": info.getDeviceId(), "name": info.name,
                    "state": str(info.state).rsplit(".", 1)[-1], "protocol": str(info.protocol).rsplit(".", 1)[-1],
                    "platform": str(info.platform).rsplit(".", 1)[-1], "spec": f"oakd:{info.getDeviceId()}"})
    return out
