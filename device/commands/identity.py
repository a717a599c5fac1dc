"""`crowdcap identity [--config FILE] [--state-dir DIR]`: this device's signing key (made at first use)
and the registry entry the backend needs: append `registry_entry` to the ingest's devices.toml."""

from __future__ import annotations

import argparse
import json

from device.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("identity", help="show this device's public signing key for the backend's registry",
                       description=__doc__)
    p.add_argument("--config", default=None, help="config TOML (for device.id and device.state_dir)")
    p.add_argument("--state-dir", default=None, help="state folder (overrides device.state_dir)")
    p.add_argument("--device-id", default=None, help="device id (overrides device.id)")
    p.add_argument("--toml", action="store_true", help="print only the registry entry (TOML), e.g. >> devices.toml")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from capture.config import ConfigError
    from device import config as config_mod
    from uplink.identity import DeviceKey, registry_entry

    try:
        cfg = config_mod.load(args.config)
    except ConfigError as e:
        raise CliError(str(e)) from None
    state_dir = args.state_dir or cfg.device.state_dir
    device_id = args.device_id or cfg.device.resolved_id
    try:
        key = DeviceKey.load_or_create(state_dir)
    except (OSError, ValueError) as e:
        raise CliError(f"device.state_dir: {e}") from None
    entry = registry_entry(device_id, key)
    if args.toml:
        print(entry, end="")
    else:
        print(json.dumps({"device_id": device_id, "ed25519": key.public_b64, "key_file": str(key.path),
                          "registry_entry": entry}))
    return 0
