"""Changing one setting of a running service: validate, persist, apply live — one path for every caller.

    set_config(service, "capture.fps", 15) -> {"key", "value", "persisted", "applied"[, "save_error"]}

Callers: the console's `config set` (`device.control`), the signed downlink's `config set`
(`device.downlink`) and model updates (`device.model_update`). It sits below all three and imports
none of them: settings validate (`device.settings`), the file is written by `device.configfile`, and
`redact.*` keys pass the privacy floor (`redact.floor.guard_setting`) first.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from capture.config import ConfigError
from device import settings
from device.configfile import persist_value, toml_value
from device.console.auth import check_hash
from redact.floor import guard_setting

log = logging.getLogger("crowdcap.control")


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
