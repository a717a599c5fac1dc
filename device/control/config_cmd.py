"""`config`: read a setting, or change one through `device.configset.set_config` (validated, saved
atomically, applied live where the setting allows).

    config | config KEY | config get [KEY]      read (no login)
    config KEY VALUE | config set KEY VALUE     change (login)
"""

from __future__ import annotations

from typing import Any

from device import settings
from device.configset import set_config
from device.console.render import flatten
from device.control.table import CommandError, Session, toml_text


def config(service: Any, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
    if args and args[0].lower() in ("get", "set"):
        verb, rest = args[0].lower(), args[1:]
    else:
        verb, rest = ("set" if len(args) >= 2 else "get"), args
    if verb == "get":
        if len(rest) > 1:
            raise CommandError("usage: config get [KEY]")
        shown = settings.to_dict(service.config)
        if not rest:
            return {"config": shown}, "\n".join(f"{k} = {toml_text(v)}" for k, v in flatten(shown).items())
        key = rest[0]
        settings.field_at(service.config, key)  # unknown key → ConfigError naming it
        value: Any = shown
        for part in key.split("."):
            value = value[part]
        return {"key": key, "value": value}, f"{key} = {toml_text(value)}"
    if len(rest) < 2:
        raise CommandError("usage: config set KEY VALUE")
    result = set_config(service, rest[0], settings.parse_text(" ".join(rest[1:])))
    text = f"{result['key']} = {toml_text(result['value'])} ({result['applied']}"
    if result["persisted"]:
        text += ", saved)"
    elif result.get("save_error"):
        text += f", NOT saved: {result['save_error']})"
    else:
        text += ", NOT saved: the service runs without a config file)"
    return result, text
