"""The one frame type that flows through crowdcap, and the contracts every stage and source share.

`RGBDFrame` is validated on construction: a frame that exists is well-formed. Arrays are held by
reference (no copies); stages return the same frame or a `frame.replace(...)` of it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the colour camera (depth is registered to it)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v <= 0:
                raise ValueError(f"intrinsics.{name}: expected a positive integer, got {v!r}")
        for name in ("fx", "fy", "cx", "cy"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float | np.number) or not math.isfinite(v):
                raise ValueError(f"intrinsics.{name}: expected a finite number, got {v!r}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"intrinsics.fx/fy: expected positive focal lengths, got {self.fx}, {self.fy}")
        dist = tuple(float(d) for d in self.distortion)
        if len(dist) not in (0, 4, 5, 8) or not all(math.isfinite(d) for d in dist):
            raise ValueError(
                f"intrinsics.distortion: expected 0, 4, 5 or 8 finite coefficients, got {self.distortion!r}"
            )
        object.__setattr__(self, "distortion", dist)

    def matrix(self) -> np.ndarray:
        """The 3×3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera at another resolution (for downscaled processing)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, self.distortion)

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy,
                "cx": self.cx, "cy": self.cy, "distortion": list(self.distortion)}


# TUM RGB-D's recommended defaults (Kinect v1, 640×480, depth in units of 1/5000 m).
TUM_DEFAULT_INTRINSICS = Intrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)
TUM_DEFAULT_DEPTH_SCALE = 5000.0


@dataclass(eq=False)
class RGBDFrame:
    """One aligned colour + depth capture and everything later stages attach to it.

    color: H×W×3 uint8, BGR (OpenCV order). depth: H×W uint16, registered to color, 0 = no data,
    `depth_scale` units per metre (1000 = millimetres). pose: 4×4 camera-to-world, or None.
    redaction: the redaction manifest, None until the redactor has passed the frame — the uplink
    refuses a frame without one (fail closed).
    """

    device_id: str
    session_id: str
    seq: int
    t_mono_ns: int
    t_utc: float
    color: np.ndarray
    depth: np.ndarray
    depth_scale: float
    intrinsics: Intrinsics
    pose: np.ndarray | None = None
    imu: tuple[Any, ...] = ()
    gps: tuple[Any, ...] = ()
    keyframe: bool = False
    redaction: dict[str, Any] | None = None
    attachments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.device_id, str) or not self.device_id:
            raise ValueError(f"device_id: expected a non-empty string, got {self.device_id!r}")
        if not isinstance(self.session_id, str) or not self.session_id:
            raise ValueError(f"session_id: expected a non-empty string, got {self.session_id!r}")
        if isinstance(self.seq, bool) or not isinstance(self.seq, int | np.integer) or self.seq < 0:
            raise ValueError(f"seq: expected a non-negative integer, got {self.seq!r}")
        if not isinstance(self.intrinsics, Intrinsics):
            raise ValueError(f"intrinsics: expected Intrinsics, got {type(self.intrinsics).__name__}")
        c, d = self.color, self.depth
        if not isinstance(c, np.ndarray) or c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3:
            raise ValueError(f"color: expected an H×W×3 uint8 array, got {_describe(c)}")
        if not isinstance(d, np.ndarray) or d.dtype != np.uint16 or d.ndim != 2:
            raise ValueError(f"depth: expected an H×W uint16 array, got {_describe(d)}")
        if d.shape != c.shape[:2]:
            raise ValueError(f"depth: size {d.shape[1]}×{d.shape[0]} does not match color {c.shape[1]}×{c.shape[0]}")
        if (self.intrinsics.width, self.intrinsics.height) != (c.shape[1], c.shape[0]):
            raise ValueError(
                f"intrinsics: {self.intrinsics.width}×{self.intrinsics.height} does not match "
                f"color {c.shape[1]}×{c.shape[0]}"
            )
        if not isinstance(self.depth_scale, int | float | np.number) or not math.isfinite(self.depth_scale) \
                or self.depth_scale <= 0:
            raise ValueError(f"depth_scale: expected a positive finite number, got {self.depth_scale!r}")
        if self.pose is not None:
            p = self.pose
            if not isinstance(p, np.ndarray) or p.shape != (4, 4) or not np.all(np.isfinite(p)):
                raise ValueError(f"pose: expected a finite 4×4 array or None, got {_describe(p)}")
        if not math.isfinite(self.t_utc):
            raise ValueError(f"t_utc: expected finite seconds since the epoch, got {self.t_utc!r}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.color.shape[1], self.color.shape[0]

    def replace(self, **changes: Any) -> RGBDFrame:
        """A new frame with some fields changed (arrays shared, not copied); validated again."""
        return dataclasses.replace(self, **changes)

    def depth_metres(self) -> np.ndarray:
        """Depth as float32 metres, 0 where there is no data."""
        return self.depth.astype(np.float32) * np.float32(1.0 / self.depth_scale)


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


def now_stamps() -> tuple[int, float]:
    """(monotonic ns, UTC seconds) for a capture happening now."""
    return time.monotonic_ns(), time.time()


class FrameWithheld(Exception):  # noqa: N818 - it is an outcome, not a bug
    """A stage refuses to pass a frame on (e.g. redaction could not vouch for it).

    The pipeline counts it under `reason` and moves on; the frame goes nowhere.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@runtime_checkable
class Stage(Protocol):
    """One step of the pipeline: takes a frame, returns a frame (or raises FrameWithheld).

    Stages own no threads or queues; the pipeline does. `close` releases resources (optional).
    Optional pair, for a stage that must see later frames before it can finish one (redaction's face
    bracket, redact/bracket.py): `push(frame) -> list[RGBDFrame | FrameWithheld]` returns the frames
    it releases now — in push order, possibly none, exactly one item per pushed frame over the
    stream (a FrameWithheld stands for a frame withheld) — and `flush() -> list[...]` releases every
    frame still held (end of stream, or a stalled one). The pipeline uses them when both exist;
    `apply` must still work alone (one frame in, that frame out).
    """

    name: str

    def apply(self, frame: RGBDFrame) -> RGBDFrame: ...


@runtime_checkable
class Source(Protocol):
    """Anything that produces aligned RGB-D frames: synthetic, replay, real cameras.

    `read` blocks until the next frame is due (pacing is the source's job) and returns None at the
    end of a finite stream. It may raise `SourceError` for a recoverable fault (unplug, timeout).
    """

    intrinsics: Intrinsics
    depth_scale: float
    fps: float

    def open(self) -> None: ...

    def read(self) -> RGBDFrame | None: ...

    def close(self) -> None: ...


class SourceError(Exception):
    """A source failed; the message says which source and what to check."""
