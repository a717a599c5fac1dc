"""MQTT uplink: wire format, crash-safe spool, sender, ingest service and session report.

    stage = uplink.build_stage(cfg.uplink, device_id, session_id)   # UplinkStage (pipeline stage)
    stage.start(); ...; stage.drain(30.0); stage.close()

Names are imported lazily so `import uplink.config` stays light (no paho/OpenCV at CLI start).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Sender", "UplinkStage", "build_stage"]


def __getattr__(name: str) -> Any:
    if name in ("UplinkStage", "build_stage"):
        from uplink import stage

        return getattr(stage, name)
    if name == "Sender":
        from uplink.sender import Sender

        return Sender
    raise AttributeError(f"module 'uplink' has no attribute {name!r}")
