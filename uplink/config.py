"""The `[uplink]` config section."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from capture.config import ConfigError, setting

_BROKER = re.compile(r"^(mqtts?)://([^:/\s]+|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?/?$")
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}  # IANA's MQTT ports


def parse_broker(url: str) -> tuple[str, str, int, bool]:
    """('mqtt'|'mqtts', host, port, tls) from mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (default ports
    1883 / 8883); ConfigError otherwise."""
    m = _BROKER.match(url or "")
    port = int(m.group(3)) if m and m.group(3) else DEFAULT_PORTS[m.group(1)] if m else 0
    if not m or not 0 < port < 65536:
        raise ConfigError(f"broker: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}")
    host = m.group(2).strip("[]")
    return m.group(1), host, port, m.group(1) == "mqtts"


def parse_brokers(urls: str) -> list[tuple[str, str, int, bool]]:
    """Each of a comma- or space-separated list of broker URLs, parsed (ConfigError naming the bad one)."""
    return [parse_broker(u) for u in re.split(r"[,\s]+", urls or "") if u]


@dataclass
class UplinkConfig:
    broker: str = setting("", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (default ports 1883 / 8883), or several "
                          "separated by commas (cluster nodes: the sender fails over between them); empty = no network (spool only)")
    spool_dir: str = setting("spool", help="store-and-forward directory")
    username: str = setting("", help="MQTT username")
    password: str = setting("", secret=True, help="MQTT password")
    client_id: str = setting("", help="MQTT client id; empty = crowdcap-<device id>")
    protocol: Literal["auto", "mqtt5", "mqtt311"] = setting(
        "auto", help="auto: MQTT 5, falling back to 3.1.1 if the broker refuses it")
    tls_ca: str = setting("", help="CA bundle for mqtts:// (empty = system CAs)")
    tls_cert: str = setting("", help="client certificate (PEM) for mutual TLS")
    tls_key: str = setting("", secret=True, help="client private key (PEM) for mutual TLS")
    tls_insecure: bool = setting(False, help="skip the broker hostname check (testing only)")
    keepalive: int = setting(30, min=5, max=3600, help="MQTT keepalive seconds")
    backoff_min: float = setting(0.5, min=0.05, max=60.0, help="first reconnect delay, seconds (doubles, with jitter)")
    backoff_max: float = setting(30.0, min=0.1, max=3600.0, help="longest reconnect delay, seconds")
    max_payload: int = setting(131072, min=1024, max=256 * 1024 * 1024,
                               help="largest MQTT payload; bigger messages are chunked (managed brokers: 128 KiB)")
    inflight: int = setting(32, min=1, max=65535, help="QoS 1 chunks awaiting PUBACK at once (throttles backlog replay)")
    spool_quota_mb: float = setting(1024.0, min=1.0, help="spool disk budget in MiB (live records get ~2/3; the rest is compaction room); full = evict by priority, counted")
    delivery: Literal["ingest", "broker"] = setting(
        "ingest", help="ingest: a record leaves the spool when the ingest confirms it durable (acks on "
        "crowdcap/v1/<device>/ack); broker: when the broker PUBACKs it (backends without acks)")
    confirm_timeout: float = setting(10.0, min=0.1, max=3600.0,
                                     help="seconds to wait for the ingest's confirmation before resending (doubles, up to 8x)")
    confirm_window_mb: float = setting(64.0, min=0.1, help="MiB sent but not yet confirmed at most (then wait)")
    spool_reserve_mb: float = setting(32.0, min=0.0, help="free space the spool leaves on its filesystem (the budget is the smaller of the quota and free space minus this)")
    fsync: Literal["always", "interval", "off"] = setting("interval", help="spool durability: per record, every fsync_interval_ms, or never")
    fsync_interval_ms: float = setting(200.0, min=1.0, max=60000.0, help="fsync period for fsync = interval")
    jpeg_quality: int = setting(85, min=10, max=100, live=True, help="colour JPEG quality")
    depth_codec: str = setting("auto", help="lossless depth codec on the wire (depth.codec names: auto, delta-zstd, "
                               "zstd, rvl, png16, raw); auto = zstd on quantised sensor depth (smaller and cheaper "
                               "to encode and decode there), delta-zstd on continuous depth")
    bandwidth: int = setting(0, min=0, live=True, help="uplink budget in bytes/s; 0 = unlimited")
    degrade_after: float = setting(5.0, min=0.1, live=True,
                                   help="seconds of backlog at the budget before degrading (lower JPEG quality, then keyframes only)")
    degraded_jpeg_quality: int = setting(50, min=10, max=100, live=True, help="JPEG quality at degrade level 1")

    def check(self) -> None:
        if self.broker and not parse_brokers(self.broker):
            raise ConfigError(f"broker: expected mqtt://HOST:PORT or mqtts://HOST:PORT, got {self.broker!r}")
        parse_brokers(self.broker)
        if self.backoff_max < self.backoff_min:
            raise ConfigError(f"backoff_max: expected >= backoff_min ({self.backoff_min}), got {self.backoff_max}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert: tls_cert and tls_key must be given together")
        for name in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ConfigError(f"{name}: file not found: {path}")
