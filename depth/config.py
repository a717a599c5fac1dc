"""The `[depth]` config section."""

from __future__ import annotations

from dataclasses import dataclass

from capture.config import ConfigError, setting


@dataclass
class DepthConfig:
    enabled: bool = setting(True, help="run odometry, keyframes and clouds")
    # delta-zstd: best measured ratio × speed on both noisy synthetic and Kinect-like depth (bench depth).
    codec: str = setting("delta-zstd", help="lossless depth codec for the wire: raw | png16 | zstd | rvl | delta-zstd")

    def check(self) -> None:
        from depth.codec import get_codec

        try:
            get_codec(self.codec)
        except ValueError as e:
            raise ConfigError(f"codec: {e}") from None
