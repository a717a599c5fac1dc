"""paho plumbing for the sender: topic names, the client it starts from, one round of socket I/O."""

from __future__ import annotations

import logging
import select
import socket
import ssl
import time

import paho.mqtt.client as mqtt

from uplink import wire
from uplink.config import UplinkConfig

TOPIC_ROOT = "crowdcap/v1"
KIND_TOPIC = {wire.FRAME: "frame", wire.CLOUD: "cloud", wire.STATUS: "status", wire.TELEMETRY: "telemetry",
              wire.EVENT: "event", wire.CMD_RESULT: "cmd/result"}


def topic(device_id: str, kind: str) -> str:
    """crowdcap/v1/<device_id>/<kind>"""
    return f"{TOPIC_ROOT}/{device_id}/{kind}"


def new_client(cfg: UplinkConfig, client_id: str, protocol: int, tls: bool) -> mqtt.Client:
    """A paho 2.x client with our credentials and TLS settings, and no queue of its own."""
    kwargs = {} if protocol == mqtt.MQTTv5 else {"clean_session": True}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs)
    c.max_inflight_messages_set(0)  # the sender's window is the bound; paho must not hold a second queue
    c.max_queued_messages_set(0)
    if cfg.username:
        c.username_pw_set(cfg.username, cfg.password or None)
    if tls:
        c.tls_set(ca_certs=cfg.tls_ca or None, certfile=cfg.tls_cert or None, keyfile=cfg.tls_key or None,
                  cert_reqs=ssl.CERT_REQUIRED)
        c.tls_insecure_set(cfg.tls_insecure)
    return c


def pump(client: mqtt.Client | None, wake: socket.socket, timeout: float) -> int:
    """One round of socket I/O on `client` (or until `wake` is written to); MQTT_ERR_SUCCESS or the
    error that ended the connection. paho's own loop is not used: the sender drives it in its thread."""
    sock = client.socket() if client else None
    if sock is None:
        return mqtt.MQTT_ERR_NO_CONN
    # TLS: bytes already decrypted inside the SSL object do not make the socket readable
    pending = sock.pending() if hasattr(sock, "pending") else 0
    try:
        r, w, _ = select.select([sock, wake], [sock] if client.want_write() else [], [], 0.0 if pending else timeout)
    except (OSError, ValueError):
        return mqtt.MQTT_ERR_CONN_LOST
    if pending and sock not in r:
        r.append(sock)
    if wake in r:
        try:
            wake.recv(4096)
        except BlockingIOError:
            pass
    rc = mqtt.MQTT_ERR_SUCCESS
    if sock in r:
        rc = client.loop_read(16)
    if rc == mqtt.MQTT_ERR_SUCCESS and sock in w:
        rc = client.loop_write()
    if rc == mqtt.MQTT_ERR_SUCCESS:
        rc = client.loop_misc()
    return rc


class LinkTrouble:
    """`last_error` for status, and a WARNING log line per distinct reason, rate-limited: a new reason
    is logged at once (at most one line per `min_gap` s), a repeating one once per `repeat` s."""

    def __init__(self, logger: logging.Logger, min_gap: float = 5.0, repeat: float = 60.0) -> None:
        self.log, self.min_gap, self.repeat = logger, min_gap, repeat
        self.last_error = ""
        self.since: float | None = None  # monotonic time the link went bad (None = fine)
        self._said: dict[str, float] = {}
        self._t_last = -1e9
        self.suppressed = 0

    def report(self, reason: str) -> None:
        now = time.monotonic()
        self.last_error = reason
        if self.since is None:
            self.since = now
        key = reason.split(":", 1)[0] if reason.startswith("connect to") else reason
        said = self._said.get(key)
        if (said is None and now - self._t_last >= self.min_gap) or (said is not None and now - said >= self.repeat):
            self._said[key] = self._t_last = now
            self.log.warning("uplink: %s", reason)
        else:
            self.suppressed += 1

    def ok(self) -> None:
        if self.since is not None and self.last_error:
            self.log.info("uplink: link up again after %.0f s (%s)", time.monotonic() - self.since, self.last_error)
        self.since = None
        self.last_error = ""
