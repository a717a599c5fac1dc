"""The command layer: ONE implementation of every operator command, used by the serial console, the
control socket (`crowdcap ctl`/`status`) and the signed downlink.

    controller = Controller(service)
    reply = controller.execute(["config", "set", "capture.fps", "15"], session)   # -> Reply

Tasmota style: a command without an argument is a query (`config KEY`, `spool`, `privacy`). `help`,
`status`, `version`, `login` and `logout` are open; everything else needs a logged-in session (the
console logs in with the PIN; the control socket and the downlink are authorised by file mode and by
signature). Every reply is a dict (`--json` prints it on one line) plus a short text for humans.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capture.config import ConfigError
from device import settings
from device.configfile import atomic_write, persist_value, toml_value
from device.console.auth import LoginGuard, check_hash
from device.console.render import flatten, status_text, text_of

log = logging.getLogger("crowdcap.control")

OPEN_COMMANDS = frozenset({"help", "status", "version", "login", "logout", "net", "log"})
# Reads need no login (README: only state changes need the PIN): `config` without a value, `privacy
# show`, `spool stats`. Their writes, and everything else, do.
OPEN_READS = {"config": ("get",), "privacy": ("show",), "spool": ("stats",)}

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


@dataclass
class _Command:
    name: str
    usage: str
    help: str
    run: Callable[[list[str], Session], tuple[dict[str, Any], str]]


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
        self.commands = {name: _Command(name, usage, text, getattr(self, f"_{name}"))
                         for name, usage, text in COMMANDS}

    # -- entry point -----------------------------------------------------------------------------
    def execute(self, argv: list[str], session: Session) -> Reply:
        if not argv:
            return Reply(True, "", {}, "")
        name = argv[0].lower()
        cmd = self.commands.get(name)
        if cmd is None:
            self.counters["unknown"] += 1
            return _error(name, f"unknown command {name!r}; try 'help'")
        idle = self.service.config.console.idle_logout_s
        now = self._clock()
        if session.origin == "console" and session.authorized and idle and now - session.last_active > idle:
            session.authorized = False
        session.last_active = now
        if requires_login(argv) and not session.authorized:
            self.counters["refused_login"] += 1
            return _error(name, "login required: login PIN")
        try:
            with self.lock:
                data, text = cmd.run(argv[1:], session)
        except (CommandError, ConfigError) as e:
            self.counters["failed"] += 1
            return _error(name, str(e))
        except Exception as e:  # a bug in a command must not take the console down
            self.counters["failed"] += 1
            return _error(name, f"internal error: {type(e).__name__}: {e}")
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
        from device.console.sections import SECTIONS, section

        try:
            n = int(args[0])
        except ValueError:
            n = -1
        if n not in SECTIONS and n != 0:
            raise CommandError(f"status: expected a section number 0-{max(SECTIONS)} "
                               f"({', '.join(f'{k} {v}' for k, v in SECTIONS.items())}), got {args[0]!r}")
        return section(n, status, self)

    def _version(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        from device.cli import package_version

        data: dict[str, Any] = {"version": package_version(), "python": platform.python_version(),
                                "device_id": self.service.device_id, "session_id": self.service.session_id}
        redact = self.service.stages.get("redact")
        st = _stage_status(redact)
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

    # -- config ----------------------------------------------------------------------------------
    def _config(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        if args and args[0].lower() in ("get", "set"):
            verb, rest = args[0].lower(), args[1:]
        else:
            verb, rest = ("set" if len(args) >= 2 else "get"), args
        if verb == "get":
            if len(rest) > 1:
                raise CommandError("usage: config get [KEY]")
            shown = settings.to_dict(self.service.config)
            if not rest:
                return {"config": shown}, "\n".join(f"{k} = {_toml(v)}" for k, v in flatten(shown).items())
            key = rest[0]
            settings.field_at(self.service.config, key)  # unknown key → ConfigError naming it
            value: Any = shown
            for part in key.split("."):
                value = value[part]
            return {"key": key, "value": value}, f"{key} = {_toml(value)}"
        if len(rest) < 2:
            raise CommandError("usage: config set KEY VALUE")
        result = set_config(self.service, rest[0], settings.parse_text(" ".join(rest[1:])))
        text = f"{result['key']} = {_toml(result['value'])} ({result['applied']}"
        if result["persisted"]:
            text += ", saved)"
        elif result.get("save_error"):
            text += f", NOT saved: {result['save_error']})"
        else:
            text += ", NOT saved: the service runs without a config file)"
        return result, text

    # -- privacy, spool, net, log ----------------------------------------------------------------
    def _privacy(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        verb = args[0].lower() if args else "show"
        redact = self.service.stages.get("redact")
        if redact is None:
            raise CommandError("privacy: no redaction stage in this pipeline")
        from device import privacy_console  # the wearer's own objects, volumes, zones, take-backs

        if verb in privacy_console.VERBS:
            try:
                return privacy_console.run(self.service, verb, args[1:])
            except privacy_console.PrivacyCommandError as e:
                raise CommandError(str(e)) from None
        if verb != "show" and not hasattr(redact, "reload_policy"):
            raise CommandError(f"privacy {verb}: redaction is disabled (redact.enabled = false or --no-redact); "
                               "no policy is in force")
        if verb == "show":
            st = _stage_status(redact)
            if not self.service.config.redact.enabled:
                return {"policy_file": None, "redaction": "disabled"}, \
                    "redaction disabled (redact.enabled = false or --no-redact): frames are marked, not redacted"
            from device.privacy_console import listing

            st["wearer"] = listing(self.service)
            return {"policy_file": self.service.config.redact.policy or "(built-in default)", **st}, \
                text_of(st) or "(no policy status)"
        if verb == "reload":
            path = self.service.config.redact.policy or None
            result = _policy_summary(redact.reload_policy(path))
            return {"reloaded": True, "policy_file": path or "(built-in default)", **result}, \
                f"policy reloaded from {path or 'built-in default'}"
        if verb == "update":  # downlink: the new policy text; written atomically, rolled back if refused
            if len(args) != 2:
                raise CommandError("usage: privacy update POLICY_TOML")
            if session.origin != "downlink":  # the fleet layer: signed by the fleet's key, nobody else
                raise CommandError("privacy update: only the signed downlink changes the fleet policy layer; "
                                   "the wearer's own layer is `config set redact.policy FILE`")
            return self._privacy_update(redact, args[1])
        raise CommandError(f"usage: privacy [show|reload|{'|'.join(privacy_console.VERBS)}]")

    def _privacy_update(self, redact: Any, text: str) -> tuple[dict[str, Any], str]:
        """The fleet's policy layer (signed downlink): it replaces the previous fleet layer, never the
        wearer's policy, and is checked against the privacy floor."""
        cfg = self.service.config
        fleet = getattr(cfg.redact, "fleet_policy", "")
        path = Path(fleet) if fleet else Path(cfg.device.state_dir) / "fleet-policy.toml"
        old = path.read_bytes() if path.exists() else None
        atomic_write(path, text.encode())
        try:
            result = _policy_summary(redact.reload_fleet(str(path)))
        except Exception as e:
            if old is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write(path, old)
            raise CommandError(f"policy refused, previous policy kept: {e}") from None
        if not fleet:
            try:  # the new policy must survive a restart, or it is not in force at all
                set_config(self.service, "redact.fleet_policy", str(path), must_persist=True, layer_update=True)
            except ConfigError as e:
                if old is None:
                    path.unlink(missing_ok=True)
                else:
                    atomic_write(path, old)
                redact.reload_fleet(None)  # redact.fleet_policy is still empty: no fleet layer
                raise CommandError(f"policy refused, previous policy kept: {e}") from None
        return {"updated": True, "policy_file": str(path), **result}, f"policy {result['policy_version']} in force ({path})"

    def _policy(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        from redact.layers import describe

        redact = self.service.stages.get("redact")
        policy = getattr(redact, "policy", None)
        if policy is None:
            raise CommandError("policy: redaction is disabled (redact.enabled = false or --no-redact); no policy is in force")
        return describe(policy)

    def _spool(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        verb = args[0].lower() if args else "stats"
        uplink = self.service.stages.get("uplink")
        if uplink is None:
            raise CommandError("spool: no uplink stage in this pipeline")
        if verb == "stats":
            st = _stage_status(uplink)
            spool = st.get("spool", st)
            return {"spool": spool}, text_of(spool)
        if verb == "flush":
            flush = getattr(uplink, "flush", None)
            if flush is None:
                raise CommandError("spool flush: not supported by this uplink")
            result = flush()
            return {"flushed": True, "result": result}, f"spool flush requested: {result}"
        raise CommandError("usage: spool [stats|flush]")

    def _net(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        uplink = self.service.stages.get("uplink")
        data: dict[str, Any] = {"broker": self.service.config.uplink.broker or "(none: spool only)"}
        if uplink is not None:
            st = _stage_status(uplink)
            data["link"] = {k: v for k, v in st.items() if k != "spool"}
        from device.health import wireless_links

        data["wireless"] = wireless_links()
        return data, text_of(data)

    def _log(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        if args and args[0].lower() == "tail":
            args = args[1:]
        try:
            n = int(args[0]) if args else 20
        except ValueError:
            raise CommandError(f"log tail: expected a number of lines, got {args[0]!r}") from None
        if not 1 <= n <= 1000:
            raise CommandError(f"log tail: expected 1-1000 lines, got {n}")
        ring = list(getattr(self.service, "log_ring", ()))
        lines = ring[-n:]
        return {"lines": lines}, "\n".join(lines) or "(no log lines)"

    # -- selftest --------------------------------------------------------------------------------
    def _selftest(self, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
        checks = {"camera": self._check_camera(), "model": self._check_model(),
                  "broker": self._check_broker(), "disk": self._check_disk()}
        ok = all(c["result"] != "fail" for c in checks.values())
        text = "\n".join(f"{name:<7} {c['result']:<5} {c['detail']}" for name, c in checks.items())
        return {"passed": ok, "checks": checks}, text + f"\nselftest {'passed' if ok else 'FAILED'}"

    def _check_camera(self) -> dict[str, str]:
        snap = self.service.pipeline.snapshot()
        if self.service.pipeline.paused:
            return {"result": "skip", "detail": "capture paused"}
        fps = snap["stages"]["capture"]["fps"]
        faults = snap.get("source_faults") or []
        if snap["frames_captured"] == 0 or (fps == 0 and faults):
            last = faults[-1]["error"] if faults else "no frames yet"
            return {"result": "fail", "detail": last}
        return {"result": "pass", "detail": f"{fps:.1f} fps, {snap['frames_captured']} frames"}

    def _check_model(self) -> dict[str, str]:
        redact = self.service.stages.get("redact")
        if redact is None:
            return {"result": "skip", "detail": "no redaction stage"}
        cfg = self.service.config
        if not cfg.redact.enabled:
            return {"result": "skip", "detail": "redaction disabled in config"}
        from device.model_update import reference_frames, selftest
        from redact.cards import default_card_path

        frames = reference_frames()
        details, ok = [], True
        for card in cfg.redact.models or [str(default_card_path())]:
            r = selftest(Path(card), cfg.redact, frames)
            ok = ok and r["ok"] and r["recall"] >= cfg.downlink.selftest_min_recall
            details.append(f"{Path(card).name}: {r['detail']}")
        return {"result": "pass" if ok else "fail", "detail": "; ".join(details)}

    def _check_broker(self) -> dict[str, str]:
        if not self.service.config.uplink.broker:
            return {"result": "skip", "detail": "no broker configured"}
        st = _stage_status(self.service.stages.get("uplink"))
        if st.get("connected"):
            return {"result": "pass", "detail": "connected"}
        return {"result": "fail", "detail": str(st.get("last_error") or "not connected")}

    def _check_disk(self) -> dict[str, str]:
        cfg = self.service.config
        worst: dict[str, str] = {"result": "pass", "detail": ""}
        for d in dict.fromkeys((cfg.uplink.spool_dir, cfg.device.state_dir)):
            p = Path(d)
            try:
                p.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=p, prefix=".selftest-") as fh:
                    fh.write(b"x")
                    fh.flush()
                    os.fsync(fh.fileno())
                free = shutil.disk_usage(p).free
            except OSError as e:
                return {"result": "fail", "detail": f"{p}: {e.strerror or e}"}
            if free < 100 * 2**20:
                return {"result": "fail", "detail": f"{p}: only {free / 2**20:.0f} MiB free"}
            worst["detail"] += f"{p}: {free / 2**30:.1f} GiB free, writable; "
        worst["detail"] = worst["detail"].rstrip("; ")
        return worst


def set_config(service: Any, key: str, value: Any, *, must_persist: bool = False,
               layer_update: bool = False) -> dict[str, Any]:
    """Validate `key = value` with the TOML loader's own rules, persist it atomically to the service's
    config file (when it has one), swap `service.config` and apply it live where the setting allows.

    A config file that cannot be written (read-only /etc under systemd) is reported in the reply
    (`persisted: false`, `save_error`) and the value still applies until restart; with `must_persist`
    (model and policy updates, which must survive a restart) it is an error and nothing changes.
    `redact.*` keys go through the privacy floor's guard (`redact.floor.guard_setting`) unless
    `layer_update` (the signed downlink's `policy update` recording its fleet layer file)."""
    if key.startswith("redact.") and not layer_update:  # the privacy floor: commands may only add privacy
        from redact.floor import guard_setting

        guard_setting(service.config.redact, key.removeprefix("redact."), value)
    if key == "console.pin_hash" and value:
        try:
            check_hash(str(value))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    _, fld, _ = settings.field_at(service.config, key)
    new_cfg = settings.with_value(service.config, key, value)
    persisted = False
    save_error = ""
    if service.config_path is not None:
        try:
            persist_value(Path(service.config_path), key, value)
            persisted = True
        except OSError as e:  # e.g. /etc read-only under ProtectSystem=strict: apply now, say it is not saved
            save_error = f"cannot write {service.config_path}: {e.strerror or e}"
            if must_persist:
                raise ConfigError(f"{key}: {save_error}") from None
            log.warning("config set %s: %s", key, save_error)
    applied = "on restart"
    stage = getattr(service, "stages", {}).get("redact")
    if key == "redact.policy" and hasattr(stage, "reload_policy"):  # the wearer's layer, checked above
        stage.reload_policy(value or None)
        applied = "live"
    live_apply = getattr(service, "set_config", None)  # the runtime's own live-apply (e.g. capture.fps)
    if fld.metadata.get("live") and live_apply is not None:
        try:
            live_apply(key, toml_value(value))
            applied = "live"
        except Exception as e:  # saved already: it applies on restart; say why not now
            applied = f"on restart (live apply failed: {type(e).__name__}: {e})"
    if not persisted and not applied.startswith("live"):
        applied = "not applied: needs a restart, which reads the unchanged file"
    service.config = new_cfg
    shown = "***" if fld.metadata.get("secret") and value else settings.to_dict(new_cfg, mask_secrets=False)
    if shown != "***":
        for part in key.split("."):
            shown = shown[part]
    result = {"key": key, "value": shown, "persisted": persisted, "applied": applied}
    if save_error:
        result["save_error"] = save_error
    log.info("config set %s = %s (%s, %s)", key, "***" if shown == "***" else value, applied,
             "saved" if persisted else "not saved")
    return result


def _policy_summary(policy: Any) -> dict[str, Any]:
    return {"policy_version": str(getattr(policy, "version", "?")), "policy_origin": str(getattr(policy, "origin", ""))}


def _stage_status(stage: Any) -> dict[str, Any]:
    fn = getattr(stage, "status", None)
    return dict(fn()) if fn is not None else {}


def _toml(v: Any) -> str:
    """A config value as the operator would type it (TOML), not a Python repr."""
    try:
        return toml_value(v)
    except ConfigError:
        return str(v)


def _error(cmd: str, message: str) -> Reply:
    return Reply(False, cmd, {"error": message}, f"error: {message}")
