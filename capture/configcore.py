"""Config primitives every package shares: `ConfigError`, `setting(...)`, `read_toml`.

Each package declares its config section as a dataclass built with `setting(...)`; `device.settings`
loads and validates all of them in one place. This module imports nothing of ours, so any package
(capture, redact, depth, uplink, device, the backend) may import it; it lives in `capture/` because
capture is the start of the one-way flow (everything downstream may import it).
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "InputError", "read_toml", "setting"]


class InputError(ValueError):
    """Something the user gave (a file, a field, a line, a flag) is wrong; the message names it.

    The CLI prints these as errors (exit 2) and every other ValueError as an internal error (a bug):
    each reader's own error class (TOML config, TUM layout, wire bytes, tags, forms, ...) derives
    from this one."""


class ConfigError(InputError):
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
    except RecursionError:  # tomllib recurses per nesting level: a hostile file must not crash us
        raise error(f"{p}: not valid TOML (nested too deeply); expected a {what}") from None
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
