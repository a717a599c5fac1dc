"""Config primitives every package shares, and the `[capture]` section.

Each package declares its config section as a dataclass built with `setting(...)`; `device.settings`
loads and validates all of them in one place.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the dotted key."""


def read_toml(path: str | Path, what: str = "file", error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Parse a TOML file; every failure is `error` naming the file and what it was meant to be."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{p}: not valid TOML ({e}); expected a {what}") from None
    except UnicodeDecodeError as e:  # TOML is UTF-8; a binary or Latin-1 file is not one
        raise error(f"{p}: not valid TOML (not UTF-8 text: byte {e.start}); expected a {what}") from None
    except OSError as e:
        raise error(f"{p}: cannot read {what} ({e.strerror})") from None


def setting(default: Any, *, min: float | None = None, max: float | None = None,  # noqa: A002
            secret: bool = False, help: str = "", live: bool = False) -> Any:  # noqa: A002
    """A dataclass field with validation bounds and docs. `live`: applied without a restart."""
    meta = {"min": min, "max": max, "secret": secret, "help": help, "live": live}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


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
