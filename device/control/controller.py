"""`Controller`: the dispatcher every front-end shares (console, control socket, downlink).

    reply = Controller(service).execute(argv, session)

It looks the command up in the table, logs the console out after `console.idle_logout_s`, refuses
what needs a login, runs one command at a time under `lock`, counts every outcome and turns any
exception into an error reply (a bug in a command must not take the console down). It owns the
commands about itself and the session (help, status, version, login, logout) and the capture switches
(start, stop, restart); the others live in their own modules as `Handler`s.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture.config import ConfigError
from device.console.auth import LoginGuard
from device.console.render import status_text
from device.console.sections import SECTIONS, section
from device.control import config_cmd, ops_cmd, privacy_cmd, selftest
from device.control.table import (
    COMMANDS,
    OPEN_COMMANDS,
    OPEN_READS,
    CommandError,
    Handler,
    Reply,
    Session,
    error_reply,
    requires_login,
    stage_status,
)
from device.version import package_version

log = logging.getLogger("crowdcap.control")

HANDLERS: dict[str, Handler] = {
    "config": config_cmd.config,
    "privacy": privacy_cmd.privacy,
    "policy": privacy_cmd.policy,
    "spool": ops_cmd.spool,
    "net": ops_cmd.net,
    "log": ops_cmd.log,
    "selftest": selftest.selftest,
}


@dataclass
class _Command:
    name: str
    usage: str
    help: str
    run: Callable[[list[str], Session], tuple[dict[str, Any], str]]


class Controller:
    """Executes commands against a running `device.runtime.Service`. Thread-safe: commands that change
    state run one at a time."""

    def __init__(self, service: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        cc = service.config.console
        self.guard = LoginGuard(max_failures=cc.max_failures, lockout_s=cc.lockout_s, clock=clock,
                                state_file=Path(service.config.device.state_dir) / "console-lockout.json")
        self.health_sample: Callable[[], dict[str, Any]] | None = None  # set by the runtime (HealthReporter)
        self.ops_status: Callable[[], dict[str, Any]] | None = None  # set by Operations
        self.counters: Counter[str] = Counter()
        self._clock = clock
        self.lock = threading.RLock()
        self.commands = {name: _Command(name, usage, text, self._runner(name)) for name, usage, text in COMMANDS}

    def _runner(self, name: str) -> Callable[[list[str], Session], tuple[dict[str, Any], str]]:
        handler = HANDLERS.get(name)
        if handler is None:
            return getattr(self, f"_{name}")  # type: ignore[no-any-return]
        return lambda args, session: handler(self.service, args, session)

    # -- entry point -----------------------------------------------------------------------------
    def execute(self, argv: list[str], session: Session) -> Reply:
        if not argv:
            return Reply(True, "", {}, "")
        name = argv[0].lower()
        cmd = self.commands.get(name)
        if cmd is None:
            self.counters["unknown"] += 1
            return error_reply(name, f"unknown command {name!r}; try 'help'")
        idle = self.service.config.console.idle_logout_s
        now = self._clock()
        if session.origin == "console" and session.authorized and idle and now - session.last_active > idle:
            session.authorized = False
        session.last_active = now
        if requires_login(argv) and not session.authorized:
            self.counters["refused_login"] += 1
            return error_reply(name, "login required: login PIN")
        try:
            with self.lock:
                data, text = cmd.run(argv[1:], session)
        except (CommandError, ConfigError) as e:
            self.counters["failed"] += 1
            return error_reply(name, str(e))
        except Exception as e:  # a bug in a command must not take the console down
            self.counters["failed"] += 1
            return error_reply(name, f"internal error: {type(e).__name__}: {e}")
        self.counters["ok"] += 1
        return Reply(True, name, data, text)

    # -- open commands ---------------------------------------------------------------------------
    def _help(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        if args:
            c = self.commands.get(args[0].lower())
            if c is None:
                raise CommandError(f"unknown command {args[0]!r}")
            need = "" if c.name in OPEN_COMMANDS else \
                " (reads: no login; changes need login)" if c.name in OPEN_READS else " (needs login)"
            login = "no" if c.name in OPEN_COMMANDS else "for changes" if c.name in OPEN_READS else "yes"
            return ({"command": c.name, "usage": c.usage, "help": c.help, "login": login},
                    f"{c.usage}\n  {c.help}{need}")
        rows = [f"  {c.usage:<40} {c.help}" for c in self.commands.values()]
        return ({"commands": {c.name: c.usage for c in self.commands.values()}},
                "commands (add --json to any for one-line JSON):\n" + "\n".join(rows))

    def _status(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        status = dict(self.service.status())
        if self.health_sample is not None and "health" not in status:
            status["health"] = self.health_sample()
        if self.ops_status is not None and "ops" not in status:
            status["ops"] = self.ops_status()
        if not args:
            return status, status_text(status)
        try:
            n = int(args[0])
        except ValueError:
            n = -1
        if n not in SECTIONS and n != 0:
            raise CommandError(f"status: expected a section number 0-{max(SECTIONS)} "
                               f"({', '.join(f'{k} {v}' for k, v in SECTIONS.items())}), got {args[0]!r}")
        return section(n, status, self)

    def _version(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        data: dict[str, Any] = {"version": package_version(), "python": platform.python_version(),
                                "device_id": self.service.device_id, "session_id": self.service.session_id}
        st = stage_status(self.service.stages.get("redact"))
        models = st.get("models") or ([st["model"]] if "model" in st else [])
        if models:  # the redaction stage reports a list of {name, version, sha256}
            data["model"] = ", ".join(f"{m.get('name', '?')}-{m.get('version', '?')}" if isinstance(m, dict)
                                      else str(m) for m in models)
        return data, "  ".join(f"{k}={v}" for k, v in data.items())

    def _login(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        if len(args) != 1:
            raise CommandError("usage: login PIN")
        result = self.guard.attempt(args[0], self.service.config.console.pin_hash)
        session.authorized = result.ok
        if not result.ok:
            self.counters["login_failed"] += 1
            log.warning("%s login refused: %s", session.origin, result.message)  # an audit trail in the journal
            raise CommandError(result.message)
        return {"logged_in": True}, result.message

    def _logout(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        session.authorized = False
        return {"logged_in": False}, "logged out"

    # -- capture ---------------------------------------------------------------------------------
    def _start(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        self.service.pipeline.resume()
        return {"paused": False}, "capture running"

    def _stop(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        self.service.pipeline.pause()
        return {"paused": True}, "capture paused (start resumes)"

    def _restart(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        self.service.restart_requested = True  # the runtime exits non-zero so systemd restarts it
        self.service.request_stop()
        log.warning("restart requested from the %s: exiting with code 75 for systemd to restart", session.origin)
        return {"restarting": True}, "restarting the service"
