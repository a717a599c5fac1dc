"""`privacy` and `policy`: what redaction is in force, and the changes the operator and the fleet may make.

    privacy [show]            the policy file, the stage's policy status, the wearer's own items (no login)
    privacy reload            re-read the wearer's policy file
    privacy update TOML       the fleet's policy layer — the signed downlink only; checked against the
                              privacy floor, written atomically, rolled back if refused
    privacy list|mark-volume|remove|redact-last ...   the wearer's objects, volumes, zones, take-backs
                              (`device.privacy_console`)
    policy                    the effective policy: every rule, the layer it came from, the floor
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capture.config import ConfigError
from device import privacy_console
from device.configfile import atomic_write
from device.configset import set_config
from device.console.render import text_of
from device.control.table import CommandError, Session, stage_status
from redact.layers import describe


def privacy(service: Any, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
    verb = args[0].lower() if args else "show"
    redact = service.stages.get("redact")
    if redact is None:
        raise CommandError("privacy: no redaction stage in this pipeline")
    if verb in privacy_console.VERBS:
        try:
            return privacy_console.run(service, verb, args[1:])
        except privacy_console.PrivacyCommandError as e:
            raise CommandError(str(e)) from None
    if verb != "show" and not hasattr(redact, "reload_policy"):
        raise CommandError(f"privacy {verb}: redaction is disabled (redact.enabled = false or --no-redact); "
                           "no policy is in force")
    if verb == "show":
        st = stage_status(redact)
        if not service.config.redact.enabled:
            return {"policy_file": None, "redaction": "disabled"}, \
                "redaction disabled (redact.enabled = false or --no-redact): frames are marked, not redacted"
        st["wearer"] = privacy_console.listing(service)
        return {"policy_file": service.config.redact.policy or "(built-in default)", **st}, \
            text_of(st) or "(no policy status)"
    if verb == "reload":
        path = service.config.redact.policy or None
        result = _policy_summary(redact.reload_policy(path))
        return {"reloaded": True, "policy_file": path or "(built-in default)", **result}, \
            f"policy reloaded from {path or 'built-in default'}"
    if verb == "update":  # downlink: the new policy text; written atomically, rolled back if refused
        if len(args) != 2:
            raise CommandError("usage: privacy update POLICY_TOML")
        if session.origin != "downlink":  # the fleet layer: signed by the fleet's key, nobody else
            raise CommandError("privacy update: only the signed downlink changes the fleet policy layer; "
                               "the wearer's own layer is `config set redact.policy FILE`")
        return _fleet_update(service, redact, args[1])
    raise CommandError(f"usage: privacy [show|reload|{'|'.join(privacy_console.VERBS)}]")


def _fleet_update(service: Any, redact: Any, text: str) -> tuple[dict[str, Any], str]:
    """The fleet's policy layer (signed downlink): it replaces the previous fleet layer, never the
    wearer's policy, and is checked against the privacy floor."""
    cfg = service.config
    fleet = getattr(cfg.redact, "fleet_policy", "")
    path = Path(fleet) if fleet else Path(cfg.device.state_dir) / "fleet-policy.toml"
    old = path.read_bytes() if path.exists() else None
    atomic_write(path, text.encode())
    try:
        result = _policy_summary(redact.reload_fleet(str(path)))
    except Exception as e:
        _restore(path, old)
        raise CommandError(f"policy refused, previous policy kept: {e}") from None
    if not fleet:
        try:  # the new policy must survive a restart, or it is not in force at all
            set_config(service, "redact.fleet_policy", str(path), must_persist=True, layer_update=True)
        except ConfigError as e:
            _restore(path, old)
            redact.reload_fleet(None)  # redact.fleet_policy is still empty: no fleet layer
            raise CommandError(f"policy refused, previous policy kept: {e}") from None
    return {"updated": True, "policy_file": str(path), **result}, f"policy {result['policy_version']} in force ({path})"


def _restore(path: Path, old: bytes | None) -> None:
    """Put the previous fleet layer file back (none before: remove the new one)."""
    if old is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write(path, old)


def policy(service: Any, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
    redact = service.stages.get("redact")
    in_force = getattr(redact, "policy", None)
    if in_force is None:
        raise CommandError("policy: redaction is disabled (redact.enabled = false or --no-redact); no policy is in force")
    return describe(in_force)


def _policy_summary(policy: Any) -> dict[str, Any]:
    return {"policy_version": str(getattr(policy, "version", "?")), "policy_origin": str(getattr(policy, "origin", ""))}
