"""`WrappedSource`: a Source around another Source (GPS tagging, privacy zones).

It passes through everything the pipeline asks a source (intrinsics, depth scale, fps, whether it is
an offline replay that wants backpressure instead of drops, open/close/read); a subclass overrides
what it adds. Without it, each wrapper repeated the pass-through and one forgot `offline`, so a GPS-
tagged replay at pace fast was dropped like a live camera.
"""

from __future__ import annotations

from typing import Any

from capture.frame import RGBDFrame


class WrappedSource:
    def __init__(self, source: Any) -> None:
        self.source = source

    @property
    def intrinsics(self) -> Any:
        return self.source.intrinsics

    @property
    def depth_scale(self) -> float:
        return self.source.depth_scale

    @property
    def fps(self) -> float:
        return self.source.fps

    @property
    def offline(self) -> bool:  # a replay at pace fast: the pipeline waits for room instead of dropping
        return bool(getattr(self.source, "offline", False))

    def open(self) -> None:
        self.source.open()

    def close(self) -> None:
        self.source.close()

    def read(self) -> RGBDFrame | None:
        return self.source.read()
