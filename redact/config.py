"""The `[redact]` config section."""

from __future__ import annotations

from dataclasses import dataclass

from capture.config import setting


@dataclass
class RedactConfig:
    enabled: bool = setting(True, help="false only for trusted replays that were redacted already")
    policy: str = setting("", help="wearer policy TOML file; empty = built-in default (faces: blur, depth removed)")
    threads: int = setting(2, min=1, max=16, help="onnxruntime intra-op threads")
