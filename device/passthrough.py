"""A stage that does nothing: for benchmarks of the spine and for tests."""

from __future__ import annotations

from capture.frame import RGBDFrame


class PassThrough:
    def __init__(self, name: str) -> None:
        self.name = name

    def apply(self, frame: RGBDFrame) -> RGBDFrame:
        return frame
