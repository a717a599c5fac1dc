"""The ingest's broker connection: paho client, protocol fallback, credentials, TLS / mutual TLS,
several broker URLs (cluster nodes) tried in turn, and bounded intake.

Intake is bounded twice: MQTT 5 CONNECT carries Receive Maximum (`receive_maximum` QoS 1 messages in
flight to us at once); and every message goes to the ingest's bounded queue from paho's thread, which
blocks when the queue is full — paho stops reading the socket, so a backlog stays in the broker (MQTT
3.1.1 brokers such as NATS get TCP backpressure instead of a protocol window).

Failover: when the connection is lost and does not come back within `failover_after` seconds on the
same node, the next URL is tried (the session is resumed there with the same client id: NATS keeps
MQTT sessions in JetStream, replicated across the cluster).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt

if TYPE_CHECKING:
    from uplink.backend.ingest import Ingest

log = logging.getLogger(__name__)


class Connection:
    def __init__(self, ingest: Ingest, root: str, failover_after: float = 3.0) -> None:
        self.ing = ingest
        self.cfg = ingest.cfg
        self.root = root
        self.failover_after = failover_after
        self.index = 0
        self.client: mqtt.Client | None = None
        self.proto: int | None = None
        self._connected = threading.Event()
        self._hung_up = False
        self._lost_at: float | None = None
        self._last_warn = 0.0

    @property
    def url(self) -> str:
        scheme, host, port, _ = self.ing.brokers[self.index]
        return f"{scheme}://{host}:{port}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _protocols(self) -> list[int]:
        if self.cfg.protocol == "mqtt5" or self.ing.share_group:
            return [mqtt.MQTTv5]
        if self.cfg.protocol == "mqtt311":
            return [mqtt.MQTTv311]
        return [mqtt.MQTTv5, mqtt.MQTTv311] if self.proto is None else [self.proto]

    def _client(self, proto: int) -> mqtt.Client:
        kwargs = {} if proto == mqtt.MQTTv5 else {"clean_session": not self.ing.persistent}
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.ing.client_id, protocol=proto,
                        manual_ack=True, **kwargs)
        if self.cfg.username:
            c.username_pw_set(self.cfg.username, self.cfg.password or None)
        if self.ing.brokers[self.index][3]:
            c.tls_set(ca_certs=self.cfg.tls_ca or None, certfile=self.cfg.tls_cert or None,
                      keyfile=self.cfg.tls_key or None, cert_reqs=ssl.CERT_REQUIRED)
            if self.cfg.tls_insecure:
                c.tls_insecure_set(True)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.reconnect_delay_set(0.2, 2)
        return c

    def open(self) -> None:
        """Connect and subscribe to the first broker that answers; ConnectionError if none does."""
        errors = []
        for _ in range(len(self.ing.brokers)):
            err = self._open_one()
            if err is None:
                return
            errors.append(err)
            self.index = (self.index + 1) % len(self.ing.brokers)
        raise ConnectionError("; ".join(errors))

    def _open_one(self) -> str | None:
        _, host, port, _ = self.ing.brokers[self.index]
        protos = self._protocols()
        for proto in protos:
            client = self._client(proto)
            self._hung_up = False
            try:
                if proto == mqtt.MQTTv5:
                    props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
                    props.SessionExpiryInterval = 86400 if self.ing.persistent else 0
                    props.ReceiveMaximum = self.cfg.receive_maximum
                    client.connect(host, port, 30, clean_start=not self.ing.persistent, properties=props)
                else:
                    client.connect(host, port, 30)
            except (OSError, ssl.SSLError) as e:
                return f"ingest: cannot connect to {host}:{port}: {e}"
            client.loop_start()
            # a 3.1.1-only broker (amqtt) may hang on an MQTT 5 CONNECT instead of refusing it
            deadline = time.monotonic() + (2.0 if proto == mqtt.MQTTv5 and len(protos) > 1 else 10.0)
            while not self._connected.is_set() and time.monotonic() < deadline and not self.ing.stopping \
                    and not self._hung_up:
                time.sleep(0.02)
            if self._connected.is_set():
                self.client, self.proto = client, proto
                log.info("ingest: connected to %s (MQTT %s)", self.url, "5" if proto == mqtt.MQTTv5 else "3.1.1")
                return None
            client.disconnect()
            client.loop_stop()
        if self.ing.share_group:
            return (f"ingest: broker {host}:{port} refused MQTT 5, which shared subscriptions (share_group) "
                    "need")
        return f"ingest: broker {host}:{port} refused MQTT 5 and 3.1.1"

    # ---- paho callbacks ------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        mid, qos = msg.mid, msg.qos

        def ack() -> None:
            if qos > 0:
                client.ack(mid, qos)

        self.ing.submit(msg.topic, msg.payload, ack)

    def _on_disconnect(self, *args: object) -> None:
        self._connected.clear()
        self._hung_up = True
        if self._lost_at is None:
            self._lost_at = time.monotonic()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            self.ing.count("connect_refused")
            now = time.monotonic()
            if now - self._last_warn > 30:
                self._last_warn = now
                log.warning("ingest: %s refused the connection: %s", self.url, reason_code)
            return
        sub = f"{self.root}/#"
        if self.ing.share_group:
            sub = f"$share/{self.ing.share_group}/{sub}"
        client.subscribe(sub, qos=1)
        self.ing.count("connects")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        if any(rc.is_failure for rc in reason_codes):
            log.error("ingest: subscription refused by %s: %s", self.url, [str(rc) for rc in reason_codes])
            self.ing.count("subscribe_refused")
            return
        self._lost_at = None
        self._connected.set()  # subscribed (SUBACK): from now on nothing published is missed

    # ---- upkeep (the ingest's run loop) --------------------------------------------------------

    def watch(self) -> None:
        """Fail over to the next broker URL when this one stays lost for `failover_after` seconds."""
        if self._connected.is_set() or self._lost_at is None or len(self.ing.brokers) < 2:
            return
        if time.monotonic() - self._lost_at < self.failover_after:
            return
        old = self.url
        self._drop_client()
        self.index = (self.index + 1) % len(self.ing.brokers)
        self.ing.count("failovers")
        log.warning("ingest: lost %s; failing over to %s", old, self.url)
        self._lost_at = time.monotonic()
        if self._open_one() is None:
            self._lost_at = None

    def reconnect(self) -> None:
        """After a storage error: reconnect so the broker resends what we did not acknowledge."""
        if self.client is None:
            return
        client = self.client
        client.disconnect()
        client.loop_stop()
        self._connected.clear()
        try:
            client.reconnect()
        except OSError as e:
            log.warning("ingest: reconnect failed (%s); paho keeps trying", e)
        client.loop_start()

    def _drop_client(self) -> None:
        if self.client is not None:
            try:
                self.client.disconnect()
                self.client.loop_stop()
            except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is gone anyway
                pass
            self.client = None

    def close(self) -> None:
        self._drop_client()
        self._connected.clear()
