"""The command table and who may run what; the types every command module shares.

    COMMANDS            (name, usage, help) rows — also what `crowdcap console` shows offline
    requires_login(argv) -> bool      open commands and reads need no login; changes do
    Session, Reply, CommandError      who asks, what comes back, a failure the operator can act on
    Handler                           a command: (service, args, session) -> (data, text)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from capture.config import ConfigError
from device.configfile import toml_value

OPEN_COMMANDS = frozenset({"help", "status", "version", "login", "logout", "net", "log", "policy"})
# Reads need no login (README: only state changes need the PIN): `config` without a value, `privacy
# show`, `spool stats`. Their writes, and everything else, do.
OPEN_READS = {"config": ("get",), "privacy": ("show", "list"), "spool": ("stats",)}

# (name, usage, help) — also what `crowdcap console` shows when no service is running.
COMMANDS: list[tuple[str, str, str]] = [
    ("help", "help [COMMAND]", "list commands, or explain one"),
    ("status", "status [N]", "summary; Status N sections: 0 all, 1 device, 2 firmware, 3 pipeline, 4 health, "
                             "5 network, 6 spool, 7 time, 8 redaction"),
    ("version", "version", "software, model and device versions"),
    ("login", "login PIN", "log in to change things (repeated failures lock the console)"),
    ("logout", "logout", "log out"),
    ("start", "start", "resume capture"),
    ("stop", "stop", "pause capture (the service keeps running)"),
    ("config", "config [get] KEY | config set KEY VALUE", "read or change a setting (validated, saved atomically)"),
    ("privacy", "privacy [show|reload|list|mark-volume|remove|redact-last]",
     "the wearer's privacy: policy, private objects/volumes/zones, take-backs"),
    ("policy", "policy", "the effective redaction policy: every rule and the layer it came from, the floor"),
    ("spool", "spool [stats|flush]", "store-and-forward spool"),
    ("net", "net", "broker connection and link quality"),
    ("log", "log tail [N]", "the last N log lines (default 20)"),
    ("selftest", "selftest", "check camera, model, broker and disk"),
    ("restart", "restart", "restart the service (systemd brings it back)"),
]


class CommandError(Exception):
    """A command failed for a reason the operator can act on; the message says which."""


@dataclass
class Session:
    """Who is asking: the console (must log in), the control socket or the downlink (trusted)."""

    origin: str = "console"
    authorized: bool = False
    last_active: float = field(default_factory=time.monotonic)


@dataclass
class Reply:
    ok: bool
    cmd: str
    data: dict[str, Any]
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "cmd": self.cmd, **self.data}


Handler = Callable[[Any, list[str], Session], tuple[dict[str, Any], str]]


def requires_login(argv: list[str]) -> bool:
    if not argv:
        return False
    name = argv[0].lower()
    if name in OPEN_COMMANDS:
        return False
    if name in OPEN_READS:
        args = [a.lower() for a in argv[1:]]
        if name == "config":  # `config`, `config KEY`, `config get [KEY]` read; a value sets
            return not (not args or args[0] == "get" or (len(args) == 1 and args[0] != "set"))
        return bool(args) and args[0] not in OPEN_READS[name]
    return True


def error_reply(cmd: str, message: str) -> Reply:
    return Reply(False, cmd, {"error": message}, f"error: {message}")


def stage_status(stage: Any) -> dict[str, Any]:
    """A stage's own `status()` (a copy), or {} for a stage without one (or no stage)."""
    fn = getattr(stage, "status", None)
    return dict(fn()) if fn is not None else {}


def toml_text(v: Any) -> str:
    """A config value as the operator would type it (TOML), not a Python repr."""
    try:
        return toml_value(v)
    except ConfigError:
        return str(v)
