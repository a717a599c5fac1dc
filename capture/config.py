"""The `[capture]` config section (and, re-exported for existing imports, the shared config core:
`ConfigError`, `setting`, `read_toml` now live in `capture.configcore`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from capture.configcore import ConfigError, read_toml, setting

__all__ = ["SOURCE_KINDS", "CaptureConfig", "ConfigError", "read_toml", "setting"]

SOURCE_KINDS = ("synthetic", "replay", "realsense", "oakd", "stereo")


@dataclass
class CaptureConfig:
    source: str = setting("synthetic", help="synthetic | replay:DIR | a camera (realsense[:SERIAL], ...)")
    width: int = setting(640, min=32, max=4096, help="synthetic source width in pixels")
    height: int = setting(480, min=32, max=4096, help="synthetic source height in pixels")
    fps: float = setting(30.0, min=0.1, max=120.0, live=True, help="frames per second (synthetic; pacing)")
    pace: Literal["realtime", "fast"] = setting("realtime", help="realtime: paced at fps; fast: as fast as possible")
    seed: int = setting(0, min=0, help="synthetic scene seed (deterministic)")
    loop: bool = setting(False, help="replay: start again at the end")
    replay_cache_mb: int = setting(64, min=0, max=4096, help="replay with loop: keep up to this many MB of decoded "
                                   "frames, so a looped folder is decoded once (PNG decoding costs ~5-10 CPU-ms per "
                                   "640×480 RGB-D frame); 0 = decode every frame")
    prerender: int = setting(0, min=0, max=600, help="synthetic: render N frames before the clock starts and play "
                             "them forth and back (a camera costs no CPU to render); 0 = render every frame live")
    gps: str = setting("", help="NMEA GPS receiver: serial port or pyserial URL (/dev/ttyACM0); empty = none")
    gps_baud: int = setting(9600, min=300, help="GPS serial speed")

    def check(self) -> None:
        kind, _, arg = self.source.partition(":")
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"source: expected one of {', '.join(SOURCE_KINDS)} (e.g. replay:DIR), got {self.source!r}")
        if kind in ("replay", "stereo") and not arg:
            raise ConfigError(f"source: {kind} needs a path: {kind}:PATH")
