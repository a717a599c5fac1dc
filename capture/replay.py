"""`replay:DIR` source: plays a TUM-layout folder (ours or the public TUM RGB-D sequences).

Colour and depth are associated by nearest timestamp within 20 ms. Paced by the recorded timestamps
(`realtime`) or as fast as it can read (`fast`: `offline`, so the pipeline applies backpressure
instead of dropping frames). Ground truth, when present, rides along as
`attachments["truth"]["pose"]` and is available as `self.groundtruth` (timestamps, poses).

With `loop`, decoded frames are kept (read-only arrays) up to `cache_mb`, so a looped folder costs its
PNG decoding (~5-10 CPU-ms per 640×480 RGB-D pair) once, not on every pass — a camera delivers decoded
frames too. Stages must not write into a frame's arrays (redaction copies on write); a cached array is
marked read-only so one that tried would fail loudly rather than corrupt the next pass.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from capture import tum
from capture.frame import RGBDFrame, SourceError


class ReplaySource:
    def __init__(self, path: str | Path, pace: str = "realtime", device_id: str = "replay",
                 session_id: str = "s0", loop: bool = False, n_frames: int | None = None, cache_mb: int = 0) -> None:
        if pace not in ("realtime", "fast"):
            raise ValueError(f"pace: expected 'realtime' or 'fast', got {pace!r}")
        self.dir = Path(path)
        if not self.dir.is_dir():
            raise tum.LayoutError(f"{self.dir}: not a folder (expected a TUM-layout folder with rgb.txt and depth.txt)")
        for name in ("rgb.txt", "depth.txt"):
            if not (self.dir / name).is_file():
                raise tum.LayoutError(f"{self.dir / name}: missing (a TUM-layout folder has rgb.txt and depth.txt)")
        self.intrinsics, self.depth_scale = tum.read_camera_json(self.dir / "camera.json")
        rgb_t, self._rgb = tum.read_list(self.dir / "rgb.txt")
        depth_t, self._depth = tum.read_list(self.dir / "depth.txt")
        self._pairs = tum.associate(rgb_t, depth_t)
        if not self._pairs:
            raise tum.LayoutError(f"{self.dir}: no colour/depth pairs within {tum.ASSOCIATION_MAX_DT * 1000:.0f} ms")
        self._stamps = rgb_t
        gt_path = self.dir / "groundtruth.txt"
        self.groundtruth = tum.read_groundtruth(gt_path) if gt_path.exists() else None
        dts = np.diff(rgb_t[[i for i, _ in self._pairs]])
        self.fps = float(1.0 / np.median(dts)) if len(dts) and np.median(dts) > 0 else 30.0
        self.pace = pace
        # offline: nothing happens in real time, so the pipeline waits for room instead of dropping
        self.offline = pace == "fast"
        self.device_id = device_id
        self.session_id = session_id
        self.loop = loop
        self.n_frames = n_frames
        self._cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}  # by file names
        self._cache_left = cache_mb * 1024 * 1024 if loop else 0
        self.cache_hits = 0
        self._index = 0
        self._seq = 0
        self._t0 = 0.0

    def __len__(self) -> int:
        return len(self._pairs)

    def open(self) -> None:
        self._t0 = time.monotonic()

    def close(self) -> None:
        pass

    def _truth_pose(self, t: float) -> np.ndarray | None:
        if self.groundtruth is None or len(self.groundtruth[0]) == 0:
            return None
        stamps, poses = self.groundtruth
        j = int(np.argmin(np.abs(stamps - t)))
        return poses[j] if abs(stamps[j] - t) <= tum.ASSOCIATION_MAX_DT else None

    def read(self) -> RGBDFrame | None:
        if self.n_frames is not None and self._seq >= self.n_frames:
            return None
        if self._index >= len(self._pairs):
            if not self.loop:
                return None
            self._index = 0
            self._t0 = time.monotonic()
        i, j = self._pairs[self._index]
        t = float(self._stamps[i])
        if self.pace == "realtime":
            first = float(self._stamps[self._pairs[0][0]])
            delay = self._t0 + (t - first) - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing recorded time, not synchronising threads
        # Past this pair before anything can fail: a bad file is skipped (the pipeline counts the
        # SourceError), not retried forever.
        self._index += 1
        cached = self._cache.get((self._rgb[i], self._depth[j]))
        if cached is not None:
            color, depth = cached
            self.cache_hits += 1
        else:
            color, depth = self._decode(i, j)
        truth = {}
        pose = self._truth_pose(t)
        if pose is not None:
            truth["pose"] = pose
        try:
            frame = RGBDFrame(self.device_id, self.session_id, self._seq, time.monotonic_ns(), t, color, depth,
                              self.depth_scale, self.intrinsics, attachments={"truth": truth} if truth else {})
        except ValueError as e:  # e.g. depth size differs from colour, or camera.json's size
            raise SourceError(f"replay {self.dir}: {self._rgb[i]} / {self._depth[j]}: {e}") from None
        self._seq += 1
        return frame

    def _decode(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        color = cv2.imread(str(self.dir / self._rgb[i]), cv2.IMREAD_COLOR)
        depth = cv2.imread(str(self.dir / self._depth[j]), cv2.IMREAD_UNCHANGED)
        if color is None or depth is None:
            raise SourceError(f"replay {self.dir}: cannot read {self._rgb[i] if color is None else self._depth[j]}")
        if depth.dtype != np.uint16 or depth.ndim != 2:
            raise SourceError(f"replay {self.dir}: {self._depth[j]}: expected a 16-bit single-channel PNG")
        size = color.nbytes + depth.nbytes
        if size <= self._cache_left:  # only well-formed frames: a bad file is reported on every pass
            color.flags.writeable = False
            depth.flags.writeable = False
            self._cache[(self._rgb[i], self._depth[j])] = (color, depth)
            self._cache_left -= size
        return color, depth
