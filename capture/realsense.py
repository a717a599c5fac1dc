"""`realsense[:SERIAL]` / `realsense:FILE` source: Intel RealSense D4xx through pyrealsense2 (extra `realsense`).

Depth is aligned to colour on the host (`rs.align`), intrinsics and depth scale are read from the
device (or the recording), each frame carries the camera's hardware timestamp and frame numbers in
`attachments["realsense"]`, and the IMU of a D435i/D455 (accel + gyro) rides along as `frame.imu`
samples received since the previous frame. `record_to=` records what is streamed; a recording is
played back by giving its path instead of a serial. librealsense 2.59 records rosbag2 (`.db3`);
older SDKs' ROS1 `.bag` files play back through the same call.

Faults (unplug, USB reset, frame timeout) are `SourceError`s: the pipeline backs off and calls
`close(); open()`, which restarts streaming once the device is back.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from capture.config import ConfigError
from capture.frame import Intrinsics, RGBDFrame, SourceError, now_stamps

log = logging.getLogger(__name__)

PLAYBACK_SUFFIXES = (".bag", ".db3")


def import_rs() -> Any:
    try:
        import pyrealsense2 as rs
    except ImportError:
        raise ConfigError("source: realsense needs pyrealsense2: pip install 'crowdcap[realsense]'") from None
    return rs


def intrinsics_from_rs(rs: Any, intr: Any) -> Intrinsics:
    """Our Intrinsics from an rs.intrinsics. Only Brown-Conrady coefficients mean the same as OpenCV's;
    other models (D4xx colour reports Inverse Brown-Conrady, normally all zero) are dropped."""
    coeffs = tuple(float(c) for c in intr.coeffs)
    distortion = coeffs if intr.model == rs.distortion.brown_conrady and any(coeffs) else ()
    return Intrinsics(int(intr.width), int(intr.height), float(intr.fx), float(intr.fy), float(intr.ppx),
                      float(intr.ppy), distortion)


def color_to_bgr(rs: Any, fmt: Any, data: np.ndarray) -> np.ndarray:
    """A colour frame's pixels as an owned BGR array (owned: SDK frames must go back to its pool)."""
    if fmt == rs.format.bgr8:
        return np.array(data, copy=True)
    if fmt == rs.format.rgb8:
        return cv2.cvtColor(data, cv2.COLOR_RGB2BGR)
    if fmt == rs.format.yuyv:
        return cv2.cvtColor(data, cv2.COLOR_YUV2BGR_YUYV)
    raise SourceError(f"realsense: colour format {fmt} is not supported (use bgr8, rgb8 or yuyv)")


class RealSenseSource:
    """Aligned RGB-D from a RealSense camera or recording. `target`: a serial, a recording path, or None
    (the first camera found)."""

    def __init__(self, target: str | None = None, width: int = 640, height: int = 480, fps: float = 30.0,
                 device_id: str = "realsense", session_id: str = "s0", n_frames: int | None = None, *,
                 record_to: str | Path | None = None, depth_preset: str | None = None,
                 emitter: bool | None = None, imu: bool = True, realtime: bool = True,
                 timeout_ms: int = 2000) -> None:
        self.rs = import_rs()
        self.playback_file: Path | None = None
        self.serial: str | None = None
        if target and (target.endswith(PLAYBACK_SUFFIXES) or Path(target).is_file()):
            self.playback_file = Path(target)
            if not self.playback_file.is_file():
                raise ConfigError(f"source: realsense recording {target}: not found")
        else:
            self.serial = target or None
        if depth_preset is not None and depth_preset not in self.rs.rs400_visual_preset.__members__:
            raise ConfigError(f"depth_preset: expected one of {', '.join(self.rs.rs400_visual_preset.__members__)}, "
                              f"got {depth_preset!r}")
        self.width, self.height, self.fps = width, height, float(fps)
        self.device_id, self.session_id, self.n_frames = device_id, session_id, n_frames
        self.record_to = None if record_to is None else str(record_to)
        self.depth_preset, self.emitter, self.imu_enabled = depth_preset, emitter, imu
        self.realtime, self.timeout_ms = realtime, timeout_ms
        self.intrinsics = Intrinsics(width, height, 1.0, 1.0, width / 2, height / 2)  # replaced on open
        self.depth_scale = 1000.0
        self.info: dict[str, str] = {}
        self.has_imu = False
        self.unsynced = 0  # sets skipped because depth and colour were more than half a frame apart
        self._pipe: Any = None
        self._queue: Any = None
        self._playback: Any = None
        self._align: Any = None
        self._imu: list[dict[str, Any]] = []
        self._last_color = -1
        self._last_motion = {}
        self._seq = 0

    @property
    def name(self) -> str:
        return f"realsense {self.playback_file or self.serial or '(first found)'}"

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        rs = self.rs
        cfg = rs.config()
        if self.playback_file is not None:
            cfg.enable_device_from_file(str(self.playback_file), repeat_playback=False)
        else:
            dev = self._find_live_device()  # checked first: pipeline.start would wait ~15 s for it
            if dev is None:
                raise SourceError(f"{self.name}: not attached (unplugged? see `crowdcap devices`)")
            if self.serial:
                cfg.enable_device(self.serial)
            fps = int(round(self.fps))
            cfg.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, fps)
            cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.bgr8, fps)
            if self.imu_enabled and any(s.is_motion_sensor() for s in dev.query_sensors()):
                cfg.enable_stream(rs.stream.accel)
                cfg.enable_stream(rs.stream.gyro)
            if self.record_to:
                cfg.enable_record_to_file(self.record_to)
            if not cfg.can_resolve(rs.pipeline_wrapper(rs.pipeline())):  # a wrong mode is fatal, not a fault
                if self._find_live_device() is None:
                    raise SourceError(f"{self.name}: not attached (unplugged? see `crowdcap devices`)")
                raise ConfigError(f"{self.name}: {self.width}×{self.height} @ {fps} fps is not a mode of this camera "
                                  f"(colour modes: {', '.join(_color_modes(rs, dev)) or 'none'})")
        pipe = rs.pipeline()
        # Our own queue instead of wait_for_frames: the pipeline's keeps only the latest set, which loses
        # frames whenever we are briefly late (and the first ones of a recording while we configure).
        self._queue = rs.frame_queue(64, keep_frames=True)
        try:
            profile = pipe.start(cfg, self._queue)
        except RuntimeError as e:
            raise SourceError(f"{self.name}: cannot start ({e}); plugged in? udev rules installed?") from None
        try:
            self._configure(profile)
        except Exception:
            pipe.stop()
            raise
        self._pipe = pipe
        self._align = rs.align(rs.stream.color)
        self._last_color = -1
        self._last_motion: dict[str, int] = {}

    def _find_live_device(self) -> Any:
        for dev in self.rs.context().query_devices():
            if not self.serial or dev.get_info(self.rs.camera_info.serial_number) == self.serial:
                return dev
        return None

    def _configure(self, profile: Any) -> None:
        rs = self.rs
        dev = profile.get_device()
        for key, info in (("name", rs.camera_info.name), ("serial", rs.camera_info.serial_number),
                          ("firmware", rs.camera_info.firmware_version), ("usb", rs.camera_info.usb_type_descriptor)):
            if dev.supports(info):
                self.info[key] = dev.get_info(info)
        self._playback = dev.as_playback() if dev.is_playback() else None
        if self._playback is not None:
            self._playback.set_real_time(self.realtime)
        depth_sensor = dev.first_depth_sensor()
        self.depth_scale = 1.0 / float(depth_sensor.get_depth_scale())  # SDK: metres per unit; ours: units per metre
        if not dev.is_playback():
            if self.depth_preset is not None and depth_sensor.supports(rs.option.visual_preset):
                depth_sensor.set_option(rs.option.visual_preset,
                                        float(rs.rs400_visual_preset.__members__[self.depth_preset].value))
            if self.emitter is not None and depth_sensor.supports(rs.option.emitter_enabled):
                depth_sensor.set_option(rs.option.emitter_enabled, 1.0 if self.emitter else 0.0)
        streams = {s.stream_type(): s for s in profile.get_streams()}
        if rs.stream.color not in streams or rs.stream.depth not in streams:
            raise SourceError(f"{self.name}: needs both depth and colour streams, has {sorted(map(str, streams))}")
        color = streams[rs.stream.color].as_video_stream_profile()
        self.intrinsics = intrinsics_from_rs(rs, color.get_intrinsics())
        self.fps = float(color.fps())
        self.has_imu = rs.stream.accel in streams or rs.stream.gyro in streams

    def close(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            try:
                pipe.stop()
            except RuntimeError:  # already stopped / device gone
                pass

    # -- frames ----------------------------------------------------------------------------------
    def read(self) -> RGBDFrame | None:
        if self.n_frames is not None and self._seq >= self.n_frames:
            return None
        if self._pipe is None:
            self.open()
        # IMU samples and re-sent old frames keep arriving when the video streams stall: without an
        # overall deadline this loop would never return (a camera hang the pipeline cannot see).
        deadline = time.monotonic() + self.timeout_ms / 1000.0
        while True:
            if self._playback is None and time.monotonic() > deadline:
                raise SourceError(f"{self.name}: no new colour + depth frame for {self.timeout_ms} ms "
                                  f"(only IMU samples or repeats; USB trouble?)")
            try:
                ok, frames = self._queue.try_wait_for_frame(100 if self._playback else self.timeout_ms)
            except RuntimeError as e:
                raise SourceError(f"{self.name}: {e}") from None
            if not ok:
                if self._playback is not None:
                    if self._playback.current_status() == self.rs.playback_status.stopped:
                        return None  # end of the recording
                    continue
                raise SourceError(f"{self.name}: no frames for {self.timeout_ms} ms (unplugged or USB reset?)")
            if not frames.is_frameset():
                self._collect_motion([frames])
                continue
            frames = frames.as_frameset()
            self._collect_motion(frames)
            color = frames.get_color_frame()
            # The syncer re-sends the latest frame of each stream with every new arrival: a colour frame
            # number we already delivered is a repeat, not a new capture.
            depth = frames.get_depth_frame()
            if not depth or not color or color.get_frame_number() == self._last_color:
                continue
            if abs(depth.get_timestamp() - color.get_timestamp()) > 500.0 / self.fps:
                self.unsynced += 1  # paired with a frame from another instant: not an RGB-D frame
                continue
            self._last_color = color.get_frame_number()
            return self._frame(frames)

    def _collect_motion(self, frames: Any) -> None:
        rs = self.rs
        for f in frames:
            if f.is_motion_frame():
                v = f.as_motion_frame().get_motion_data()
                kind = "accel" if f.get_profile().stream_type() == rs.stream.accel else "gyro"
                if self._last_motion.get(kind) == f.get_frame_number():
                    continue  # a repeat (see read)
                self._last_motion[kind] = f.get_frame_number()
                self._imu.append({"kind": kind, "t_hw_ms": f.get_timestamp(), "xyz": [v.x, v.y, v.z]})
        del self._imu[:-1000]  # bounded if nobody reads frames for a while

    def _frame(self, frames: Any) -> RGBDFrame:
        rs = self.rs
        t_mono, t_utc = now_stamps()
        aligned = self._align.process(frames)
        depth_f, color_f = aligned.get_depth_frame(), aligned.get_color_frame()
        color = color_to_bgr(rs, color_f.get_profile().format(), np.asanyarray(color_f.get_data()))
        depth = np.array(np.asanyarray(depth_f.get_data()), dtype=np.uint16, copy=True)
        domain = color_f.get_frame_timestamp_domain()
        t_hw = color_f.get_timestamp()
        if domain == rs.timestamp_domain.global_time:  # host-synchronised device clock, ms since the epoch
            t_utc = t_hw / 1000.0
        meta = {"t_hw_ms": t_hw, "domain": str(domain).rsplit(".", 1)[-1],
                "color_frame": color_f.get_frame_number(), "depth_frame": depth_f.get_frame_number()}
        imu, self._imu = tuple(self._imu), []
        frame = RGBDFrame(self.device_id, self.session_id, self._seq, t_mono, t_utc, color, depth,
                          self.depth_scale, self.intrinsics, imu=imu, attachments={"realsense": meta})
        self._seq += 1
        return frame


def _color_modes(rs: Any, dev: Any) -> list[str]:
    modes = set()
    for sensor in dev.query_sensors():
        for p in sensor.get_stream_profiles():
            if p.stream_type() == rs.stream.color and p.is_video_stream_profile():
                v = p.as_video_stream_profile()
                modes.add((v.width(), v.height(), v.fps()))
    return [f"{w}×{h}@{f}" for w, h, f in sorted(modes)]


def list_devices() -> list[dict[str, Any]]:
    """Attached RealSense cameras: name, serial, firmware, USB type, IMU present. [] without the SDK."""
    try:
        import pyrealsense2 as rs
    except ImportError:
        return []
    out = []
    for dev in rs.context().query_devices():
        entry: dict[str, Any] = {"kind": "realsense"}
        for key, info in (("name", rs.camera_info.name), ("serial", rs.camera_info.serial_number),
                          ("firmware", rs.camera_info.firmware_version), ("usb", rs.camera_info.usb_type_descriptor),
                          ("product_line", rs.camera_info.product_line)):
            if dev.supports(info):
                entry[key] = dev.get_info(info)
        entry["imu"] = any(s.is_motion_sensor() for s in dev.query_sensors())
        entry["spec"] = f"realsense:{entry.get('serial', '')}"
        out.append(entry)
    return out
