"""The `[depth]` config section."""

from __future__ import annotations

from dataclasses import dataclass

from capture.config import setting


@dataclass
class DepthConfig:
    enabled: bool = setting(True, help="run odometry, keyframes and clouds")
    codec: str = setting("rvl", help="lossless depth codec for the wire")
