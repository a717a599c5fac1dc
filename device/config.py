"""The whole device config: one TOML file, one dataclass per section, validated by `device.settings`.

    [device]   id, state_dir            [capture]  source, size, fps, pace
    [pipeline] queue sizes              [redact]   policy, model threads
    [depth]    codec, odometry          [uplink]   broker, spool, TLS, budget
    [console]  serial port, PIN         [health]   telemetry period, thermal limits
    [downlink] signed command key
"""

from __future__ import annotations

import dataclasses
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capture.config import CaptureConfig, ConfigError, setting
from depth.config import DepthConfig
from device import settings
from redact.config import RedactConfig
from redact.private.config import PrivacyConfig
from uplink.config import UplinkConfig
from uplink.signed import load_public_key

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _default_device_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:48] or "device"
    return f"cc-{host}"


@dataclass
class DeviceSection:
    id: str = setting("", help="device id in topics and sessions; empty = cc-<hostname>")
    state_dir: str = setting("state", help="where the device keeps its session counter and runtime state")

    def check(self) -> None:
        if self.id and not _ID.match(self.id):
            raise ConfigError(f"id: expected 1-64 of A-Z a-z 0-9 _ -, got {self.id!r}")

    @property
    def resolved_id(self) -> str:
        return self.id or _default_device_id()


@dataclass
class PipelineConfig:
    capture_queue: int = setting(0, min=0, max=256, help="frames waiting for redaction (oldest dropped when full); "
                                 "0 = auto: redact.face_every + 2 (a key frame's detection and a burst in the "
                                 "redaction's second thread are waited out, not dropped; latency still counts it)")
    stage_queue: int = setting(8, min=1, max=1024, help="frames between later stages (never dropped; blocks)")
    drain_timeout: float = setting(30.0, min=0.0, help="seconds to deliver what was accepted before exit")


@dataclass
class ConsoleConfig:
    port: str = setting("", help="serial port for the operator console (/dev/ttyS0, /dev/ttyGS0); empty = none")
    baudrate: int = setting(115200, min=300, help="serial speed (8N1)")
    pin_hash: str = setting("", secret=True, help="scrypt hash of the operator PIN (crowdcap console hash-pin)")
    max_failures: int = setting(5, min=1, max=100, help="failed logins before the console locks")
    lockout_s: float = setting(30.0, min=0.0, help="first lockout; doubles with each further lockout (max 1 h)")
    idle_logout_s: float = setting(600.0, min=0.0, help="log out after this many idle seconds (0 = never)")


@dataclass
class HealthConfig:
    telemetry_period: float = setting(10.0, min=0.5, help="seconds between telemetry messages")
    thermal_soft_c: float = setting(70.0, min=30.0, max=110.0, help="above this, lower the capture rate")
    thermal_hard_c: float = setting(80.0, min=30.0, max=110.0, help="at this, capture at thermal_min_fps")
    thermal_min_fps: float = setting(5.0, min=0.1, help="capture rate cap when hot")
    stall_after_s: float = setting(30.0, min=1.0, help="a stage with input but no output this long is stalled")

    def check(self) -> None:
        if self.thermal_hard_c <= self.thermal_soft_c:
            raise ConfigError(f"thermal_hard_c: expected a value > thermal_soft_c ({self.thermal_soft_c}), "
                              f"got {self.thermal_hard_c}")


@dataclass
class DownlinkConfig:
    public_key: str = setting("", help="backend Ed25519 public key (base64 raw or PEM); empty = downlink refused")
    max_ttl_s: float = setting(86400.0, min=1.0, help="refuse commands whose expiry is further away than this")
    clock_skew_s: float = setting(300.0, min=0.0, help="accept commands issued this far in the future")
    models_dir: str = setting("models", help="where model updates are kept (current.onnx points at the active one)")
    max_bytes: int = setting(64 * 1024 * 1024, min=1024, help="largest command message accepted")
    selftest_min_recall: float = setting(0.8, min=0.0, max=1.0,
                                         help="a model update must find this share of the reference faces")

    def check(self) -> None:
        if self.public_key:
            try:
                load_public_key(self.public_key)
            except ValueError as e:
                raise ConfigError(str(e).removeprefix("downlink.")) from None


@dataclass
class Config:
    device: DeviceSection = field(default_factory=DeviceSection)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    redact: RedactConfig = field(default_factory=RedactConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    downlink: DownlinkConfig = field(default_factory=DownlinkConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


def load(path: str | Path | None = None) -> Config:
    """The config in `path` (or the defaults); raises ConfigError naming the key on any problem."""
    if path is None:
        return Config()
    table = settings.load_toml(path)
    try:
        return settings.build(Config, table, "")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def from_table(table: dict[str, Any]) -> Config:
    return settings.build(Config, table, "")


def override(cfg: Config, **dotted: Any) -> Config:
    """Apply command-line overrides like {'capture.source': 'replay:DIR'} (None = not given)."""
    for key, value in dotted.items():
        if value is not None:
            cfg = settings.with_value(cfg, key, value)
    return cfg


def show(cfg: Config) -> dict[str, Any]:
    """The effective config as a dict, secrets masked."""
    return settings.to_dict(cfg)


def replace(cfg: Config, **sections: Any) -> Config:
    return dataclasses.replace(cfg, **sections)
