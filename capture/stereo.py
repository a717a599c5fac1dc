"""`stereo:CONFIG` source: two cameras (or a side-by-side one) → rectified left colour + SGBM depth in mm.

CONFIG is one OpenCV FileStorage file (YAML, JSON or XML) holding the calibration from
`cv2.stereoCalibrate` and naming the inputs:

    K1, D1, K2, D2   camera matrices and distortion of the left and right camera
    R, T             right camera from left camera: X_right = R·X_left + T
    size             [width, height] the calibration was made at
    units            unit of T: "m" (default), "cm" or "mm"
    left, right      each a device index ("0"), a device path (/dev/video0), a video file or an image
                     folder; relative paths are relative to the CONFIG file
    sbs              instead of left/right: one camera whose frames are left|right side by side

Rectification maps are computed once; depth is registered to the *rectified* left image, and the
source's intrinsics are those of the rectified left camera (no distortion).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from capture.frame import Intrinsics, RGBDFrame, SourceError, now_stamps
from capture.stereo_calib import CalibrationError, StereoCalibration

DEPTH_SCALE = 1000.0  # millimetres
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}


class Rectifier:
    """Rectification maps and the rectified geometry, computed once from a calibration."""

    def __init__(self, calib: StereoCalibration) -> None:
        K1, D1, K2, D2 = calib.K1, calib.D1, calib.K2, calib.D2
        R1, R2, P1, P2, self.Q, _, _ = cv2.stereoRectify(K1, D1, K2, D2, calib.size, calib.R, calib.T.reshape(3, 1),
                                                         flags=cv2.CALIB_ZERO_DISPARITY, alpha=0)
        if abs(P2[1, 3]) > abs(P2[0, 3]):
            raise CalibrationError("T: the cameras are stacked vertically; only side-by-side pairs are supported")
        if P2[0, 3] > 0:
            raise CalibrationError("T: the 'right' camera is to the left of the 'left' one; swap left and right")
        self.R1 = R1
        self.size = calib.size
        self.focal = float(P1[0, 0])
        self.baseline = float(-P2[0, 3] / P2[0, 0])  # metres
        w, h = calib.size
        self.intrinsics = Intrinsics(w, h, float(P1[0, 0]), float(P1[1, 1]), float(P1[0, 2]), float(P1[1, 2]))
        self._left = cv2.initUndistortRectifyMap(K1, D1, R1, P1, calib.size, cv2.CV_16SC2)
        self._right = cv2.initUndistortRectifyMap(K2, D2, R2, P2, calib.size, cv2.CV_16SC2)

    def left(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        return cv2.remap(image, *self._left, interpolation)

    def right(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        return cv2.remap(image, *self._right, interpolation)


class DisparityDepth:
    """StereoSGBM on rectified grey images → depth in mm (uint16, 0 = no match)."""

    def __init__(self, focal: float, baseline: float, min_depth: float = 0.4, max_depth: float = 10.0,
                 block_size: int = 5) -> None:
        max_disp = focal * baseline / min_depth
        num = int(math.ceil(max_disp / 16.0)) * 16
        self.num_disparities = max(16, min(num, 256))
        self.sgbm = cv2.StereoSGBM.create(
            minDisparity=0, numDisparities=self.num_disparities, blockSize=block_size,
            P1=8 * block_size * block_size, P2=32 * block_size * block_size, disp12MaxDiff=1,
            uniquenessRatio=10, speckleWindowSize=100, speckleRange=2, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
        # depth_mm = f·B·1000 / d and SGBM returns 16·d: one constant, one division per pixel.
        self._k = np.float32(focal * baseline * DEPTH_SCALE * 16.0)
        self._min_disp16 = max(1, int(16.0 * focal * baseline / max_depth))

    def compute(self, left_grey: np.ndarray, right_grey: np.ndarray) -> np.ndarray:
        disp16 = self.sgbm.compute(left_grey, right_grey)
        valid = disp16 >= self._min_disp16
        depth = np.zeros(disp16.shape, np.float32)
        np.divide(self._k, disp16, out=depth, where=valid)
        return np.minimum(depth + 0.5, 65535.0).astype(np.uint16)


class FrameInput(Protocol):
    """Where raw left/right images come from."""

    def open(self) -> None: ...

    def grab(self) -> tuple[np.ndarray, np.ndarray] | None: ...

    def close(self) -> None: ...


class _Capture:
    """One cv2.VideoCapture: a camera (index or /dev path) or a video file."""

    def __init__(self, what: str, role: str, size: tuple[int, int] = (0, 0), fps: float = 0.0) -> None:
        self.what = what
        self.role = role
        self.size = size
        self.fps = fps
        self.live = what.isdigit() or what.startswith("/dev/")
        self.cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        if not self.live and not Path(self.what).is_file():
            raise SourceError(f"stereo: {self.role} video {self.what}: not found")
        cap = cv2.VideoCapture(int(self.what) if self.what.isdigit() else self.what)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"stereo: {self.role} camera {self.what}: cannot open (unplugged? permissions?)")
        if self.live and self.size[0]:  # a camera must deliver the size it was calibrated at
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a stale queued one
        self.cap = cap

    def grab(self) -> bool:
        if self.cap is None:
            raise SourceError(f"stereo: {self.role} camera {self.what}: not open")
        return bool(self.cap.grab())

    def retrieve(self) -> np.ndarray:
        assert self.cap is not None
        ok, image = self.cap.retrieve()
        if not ok or image is None:
            raise SourceError(f"stereo: {self.role} camera {self.what}: frame could not be decoded")
        return image

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class CaptureInput:
    """Two VideoCaptures, or one side-by-side. grab() on both first so the exposures are close in time."""

    def __init__(self, left: str, right: str | None, size: tuple[int, int] = (0, 0), fps: float = 0.0) -> None:
        w, h = size
        if right:
            self.caps = [_Capture(left, "left", size, fps), _Capture(right, "right", size, fps)]
        else:
            self.caps = [_Capture(left, "side-by-side", (2 * w, h), fps)]

    def open(self) -> None:
        try:
            for c in self.caps:
                c.open()
        except SourceError:
            self.close()
            raise

    def grab(self) -> tuple[np.ndarray, np.ndarray] | None:
        grabbed = [c.grab() for c in self.caps]
        for c, ok in zip(self.caps, grabbed, strict=True):
            if not ok:
                if not c.live:
                    return None  # end of a video file
                raise SourceError(f"stereo: {c.role} camera {c.what}: no frame (unplugged or timed out)")
        images = [c.retrieve() for c in self.caps]
        if len(images) == 1:
            half = images[0].shape[1] // 2
            return images[0][:, :half], images[0][:, half:2 * half]
        return images[0], images[1]

    def close(self) -> None:
        for c in self.caps:
            c.close()


class FolderInput:
    """Two image folders with matching sorted file names. A folder that vanishes is a SourceError; the
    position is kept across close/open, so a replugged card continues where it stopped."""

    def __init__(self, left: Path, right: Path) -> None:
        self.dirs = (left, right)
        self.index = 0
        self._names: list[str] = []

    def open(self) -> None:
        listings = []
        for d in self.dirs:
            if not d.is_dir():
                raise SourceError(f"stereo: image folder {d}: not found")
            listings.append(sorted(p.name for p in d.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES))
        if listings[0] != listings[1]:
            raise SourceError(f"stereo: {self.dirs[0]} and {self.dirs[1]} do not hold the same file names")
        self._names = listings[0]

    def grab(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.index >= len(self._names):
            return None
        name = self._names[self.index]
        images = []
        for d in self.dirs:
            image = cv2.imread(str(d / name), cv2.IMREAD_COLOR)
            if image is None:
                if not d.is_dir():  # same message as open(): one outage is one gap in the fault log
                    raise SourceError(f"stereo: image folder {d}: not found")
                self.index += 1  # the folder is there, the file is bad: skip it (counted), not retry forever
                raise SourceError(f"stereo: {d / name}: missing or unreadable")
            images.append(image)
        self.index += 1
        return images[0], images[1]

    def close(self) -> None:
        self._names = []


def _input_from(fs: cv2.FileStorage, base: Path, size: tuple[int, int], fps: float) -> FrameInput:
    def get(key: str) -> str:
        node = fs.getNode(key)
        if node.empty():
            return ""
        value = node.string() if node.isString() else str(int(node.real())) if node.isInt() else ""
        if not value:
            raise CalibrationError(f"{base}: {key}: expected a device index, device path, video file or folder")
        return value

    def resolve(value: str) -> str:
        if value.isdigit() or value.startswith("/dev/"):
            return value
        p = Path(value)
        return str(p if p.is_absolute() else base.parent / p)

    left, right, sbs = get("left"), get("right"), get("sbs")
    if sbs:
        return CaptureInput(resolve(sbs), None, size, fps)
    if not left or not right:
        raise CalibrationError(f"{base}: left/right: both are needed (or sbs for a side-by-side camera)")
    left, right = resolve(left), resolve(right)
    if Path(left).is_dir() or Path(right).is_dir():
        return FolderInput(Path(left), Path(right))
    return CaptureInput(left, right, size, fps)


class StereoSource:
    """Rectified left colour + SGBM depth (mm) per frame, from a stereo CONFIG file (see module doc)."""

    def __init__(self, config: str | Path, fps: float = 30.0, device_id: str = "stereo", session_id: str = "s0",
                 n_frames: int | None = None, min_depth: float = 0.4, max_depth: float = 10.0,
                 frame_input: FrameInput | None = None) -> None:
        self.config = Path(config)
        calib, fs = StereoCalibration.load(self.config)
        self.input = frame_input or _input_from(fs, self.config, calib.size, fps)
        fs.release()
        self.calibration = calib
        self.rectifier = Rectifier(calib)
        self.matcher = DisparityDepth(self.rectifier.focal, self.rectifier.baseline, min_depth, max_depth)
        self.intrinsics = self.rectifier.intrinsics
        self.depth_scale = DEPTH_SCALE
        self.fps = float(fps)
        self.device_id = device_id
        self.session_id = session_id
        self.n_frames = n_frames
        self._seq = 0
        self._open = False

    def open(self) -> None:
        self.input.open()
        self._open = True

    def close(self) -> None:
        self._open = False
        self.input.close()

    def read(self) -> RGBDFrame | None:
        if self.n_frames is not None and self._seq >= self.n_frames:
            return None
        if not self._open:
            self.open()  # after a failed reconnect: raises the same SourceError until the device is back
        pair = self.input.grab()
        if pair is None:
            return None
        t_mono, t_utc = now_stamps()
        t0 = time.perf_counter()
        color, depth = self.compute(*pair)
        frame = RGBDFrame(self.device_id, self.session_id, self._seq, t_mono, t_utc, color, depth,
                          self.depth_scale, self.intrinsics,
                          attachments={"stereo": {"ms": round((time.perf_counter() - t0) * 1e3, 2)}})
        self._seq += 1
        return frame

    def compute(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rectified left BGR, depth mm registered to it) from one raw pair."""
        w, h = self.calibration.size
        for role, image in (("left", left), ("right", right)):
            if image.shape[1] != w or image.shape[0] != h:
                raise SourceError(f"stereo: {role} image is {image.shape[1]}×{image.shape[0]}, "
                                  f"calibration is {w}×{h} ({self.config})")
        left_r = self.rectifier.left(left)
        right_r = self.rectifier.right(right)
        grey_l = cv2.cvtColor(left_r, cv2.COLOR_BGR2GRAY) if left_r.ndim == 3 else left_r
        grey_r = cv2.cvtColor(right_r, cv2.COLOR_BGR2GRAY) if right_r.ndim == 3 else right_r
        color = left_r if left_r.ndim == 3 else cv2.cvtColor(left_r, cv2.COLOR_GRAY2BGR)
        return color, self.matcher.compute(grey_l, grey_r)
