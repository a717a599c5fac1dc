"""The `[uplink]` config section."""

from __future__ import annotations

from dataclasses import dataclass

from capture.config import setting


@dataclass
class UplinkConfig:
    broker: str = setting("", help="mqtt://HOST:PORT or mqtts://HOST:PORT; empty = no network (spool only)")
    spool_dir: str = setting("spool", help="store-and-forward directory")
    username: str = setting("", help="MQTT username")
    password: str = setting("", secret=True, help="MQTT password")
