"""The ingest's `[ingest]` config section (`crowdcap ingest --config FILE`), validated like the device's
config (device.settings.build: types, bounds, unknown keys — every error names the key)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from capture.config import ConfigError, setting
from uplink.config import parse_broker


@dataclass
class IngestConfig:
    brokers: list[str] = setting(["mqtt://127.0.0.1:1883"], help="broker URLs, tried in turn (the nodes of one "
                                 "cluster): mqtt:// or mqtts://; or nats:// / tls:// for a NATS JetStream cluster "
                                 "(workers share one durable consumer)")
    out: str = setting("ingest-out", help="output folder: OUT/<device>/<session>/ (workers of one group share it)")
    mcap: bool = setting(False, help="also write OUT/<device>/<session>/mcap/*.mcap as frames arrive (Foxglove; "
                         "append-only, readable after a crash)")
    share_group: str = setting("", help="MQTT 5 shared subscription group: workers of a group split the stream "
                               "(empty = one worker with a persistent session)")
    client_id: str = setting("", help="MQTT client id; empty = derived from the output folder (persistent) or "
                             "unique per worker (share group)")
    protocol: Literal["auto", "mqtt5", "mqtt311"] = setting("auto", help="auto: MQTT 5, else 3.1.1 (NATS speaks 3.1.1)")
    username: str = setting("", help="MQTT username")
    password: str = setting("", secret=True, help="MQTT password")
    tls_ca: str = setting("", help="CA bundle for mqtts:// (empty = system CAs)")
    tls_cert: str = setting("", help="client certificate (PEM) for mutual TLS")
    tls_key: str = setting("", secret=True, help="client private key (PEM) for mutual TLS")
    tls_insecure: bool = setting(False, help="skip the broker hostname check (testing only)")
    registry: str = setting("", help="device registry TOML ([devices.\"<id>\"] ed25519 = ...): only registered "
                            "devices with valid signatures are stored; empty = anyone (logged as a warning)")
    depth_png: Literal["fast", "opencv"] = setting("fast", help="how depth/<seq>.png is written (the same "
                                                   "16-bit PNG pixels either way): fast = own writer, ISA-L deflate, "
                                                   "~3x less CPU; opencv = cv2.imencode (the old path)")
    workers: int = setting(2, min=1, max=64, help="worker threads (decode, PNG, files)")
    queue: int = setting(64, min=1, max=100000, help="received messages waiting for a worker; when full the "
                         "ingest stops reading from the broker (backpressure, not memory)")
    receive_maximum: int = setting(32, min=1, max=65535, help="MQTT 5 Receive Maximum: QoS 1 messages the broker "
                                   "may have in flight to this ingest")
    partial_timeout: float = setting(600.0, min=0.0, help="seconds before an incomplete multi-chunk message is "
                                     "deleted")
    partial_max_mb: float = setting(2048.0, min=1.0, help="disk for incomplete messages, all devices (MiB)")
    partial_max: int = setting(8192, min=1, help="incomplete messages, all devices")
    device_partial_max_mb: float = setting(512.0, min=1.0, help="disk for incomplete messages per device (MiB)")
    device_partial_max: int = setting(1024, min=1, help="incomplete messages per device")
    session_idle: float = setting(300.0, min=1.0, help="seconds after which an idle session's state is finalized "
                                  "and dropped from memory (reloaded from disk if it speaks again)")
    max_sessions: int = setting(10000, min=1, help="sessions kept in memory at most (least recently used go)")
    metrics_port: int = setting(0, min=0, max=65535, help="Prometheus /metrics and /healthz port; 0 = off")
    metrics_host: str = setting("127.0.0.1", help="address the metrics endpoint listens on")

    def check(self) -> None:
        if not self.brokers:
            raise ConfigError("brokers: expected at least one broker URL")
        nats = [u.startswith(("nats://", "tls://")) for u in self.brokers]
        if any(nats) and not all(nats):
            raise ConfigError("brokers: either all mqtt(s):// or all nats:// / tls:// URLs, not both")
        for i, url in enumerate(self.brokers):
            if nats[i]:
                if not re.match(r"^(nats|tls)://[^\s/:]+:\d{1,5}$", url):
                    raise ConfigError(f"brokers[{i}]: expected nats://HOST:PORT or tls://HOST:PORT, got {url!r}")
                continue
            try:
                parse_broker(url)
            except ConfigError as e:
                raise ConfigError(f"brokers[{i}]: {str(e).removeprefix('broker: ')}") from None
        if any(c in self.share_group for c in "/+#"):
            raise ConfigError(f"share_group: may not contain / + or #, got {self.share_group!r}")
        if not self.out:
            raise ConfigError("out: expected a folder")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert: tls_cert and tls_key must be given together")
        for name in ("tls_ca", "tls_cert", "tls_key", "registry"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ConfigError(f"{name}: file not found: {path}")
        if self.device_partial_max_mb > self.partial_max_mb:
            raise ConfigError(f"device_partial_max_mb: expected <= partial_max_mb ({self.partial_max_mb})")
