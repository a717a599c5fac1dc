"""The sender's connection to one broker node: connect (MQTT 5, else 3.1.1), subscribe, tear down.

A mixin of `uplink.sender.Sender` (split out to keep that module readable, like
`uplink.sender_events`). It runs in the sender thread and uses its state directly: no locks around
paho. A teardown hands every record in flight back to the spool, which replays it on the next
connection (the ingest dedupes).
"""

from __future__ import annotations

import ssl
import time

import paho.mqtt.client as mqtt

from uplink.mqtt_client import new_client, topic


class BrokerConnection:
    def _next_node(self) -> None:
        if len(self.urls) > 1:
            self._node = (self._node + 1) % len(self.urls)
            self.counters["node_switches"] += 1

    def _try_connect(self) -> bool:
        """`_connect`, but an unexpected error (a CA or key file that does not parse, ...) is a failed
        attempt with a reason in `last_error`, retried with backoff: it used to end the sender thread,
        and nothing was sent again until a restart."""
        try:
            return self._connect()
        except Exception as e:  # noqa: BLE001 - the sender thread must not die
            self.last_error = f"connect to {self.host}:{self.port}: {type(e).__name__}: {e}"
            self.counters["connect_errors"] += 1
            self._teardown()
            return False

    def _new_client(self) -> mqtt.Client:
        c = new_client(self.cfg, self.cfg.client_id or f"crowdcap-{self.device_id}", self._proto, self.tls)
        self._connack_name = ""
        c.will_set(topic(self.device_id, "status"), self.will_payload, qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        return c

    def _connect(self) -> bool:
        c = self._client = self._new_client()
        self._connack = None
        try:
            if self._proto == mqtt.MQTTv5:
                c.connect(self.host, self.port, self.cfg.keepalive, clean_start=True)
            else:
                c.connect(self.host, self.port, self.cfg.keepalive)
        except (OSError, ssl.SSLError, ValueError) as e:
            tls = "TLS handshake failed: " if isinstance(e, ssl.SSLError) else ""
            self.last_error = f"connect to {self.host}:{self.port}: {tls}{e}"
            self._client = None
            return False
        # An MQTT 3.1.1-only broker may just hang on an MQTT 5 CONNECT: give the first try less time.
        deadline = time.monotonic() + (2.0 if not self._proto_confirmed and self._proto == mqtt.MQTTv5 else 10.0)
        while self._connack is None and time.monotonic() < deadline and not self._stop.is_set():
            if self._pump(0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        if self._connack != 0:
            self.last_error = (f"broker {self.host}:{self.port} refused the connection: {self._connack_name} "
                               f"(CONNACK {self._connack})" if self._connack
                               else f"no CONNACK from the broker {self.host}:{self.port}")
            self._fallback_protocol()
            self._teardown()
            return False
        self._proto_confirmed = True
        self._connected = True
        self.last_error = ""
        self.counters["connects"] += 1
        self._live_from = self._next_spool_id()
        self._last_progress = time.monotonic()
        self._cursor = 0
        self._subs.clear()
        self._resub.clear()
        self._subscribe(topic(self.device_id, "cmd"))
        if self.track is not None:
            self._subscribe(topic(self.device_id, "ack"))
        if self.status_payload is not None and (p := self.status_payload()) is not None:
            c.publish(topic(self.device_id, "status"), p, qos=1, retain=True)
        return True

    def _subscribe(self, name: str) -> None:
        """QoS 1; the SUBACK is checked (PahoEvents._on_subscribe): a broker may refuse it for now."""
        rc, mid = self._client.subscribe(name, qos=1)
        if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._subs[mid] = name

    def _resubscribe_due(self) -> None:
        now = time.monotonic()
        due = [name for name, t in self._resub.items() if t <= now]
        for name in due:
            del self._resub[name]
            self.counters["resubscribes"] += 1
            self._subscribe(name)

    def _fallback_protocol(self) -> None:
        if self.cfg.protocol == "auto" and not self._proto_confirmed:
            self._proto = mqtt.MQTTv311 if self._proto == mqtt.MQTTv5 else mqtt.MQTTv5
            self.counters["protocol_fallbacks"] += 1

    def _teardown(self) -> None:
        was = self._connected
        self._connected = False
        c = self._client
        if c is not None:
            try:
                if was and self._stop.is_set():
                    c.disconnect()  # clean: the broker does not publish the will (close() sent "offline")
                    self._pump(0.2)
                elif (sock := c.socket()) is not None:
                    sock.close()  # abrupt: whatever paho still holds is dropped; the spool resends it
            except Exception:  # noqa: BLE001 - the socket may already be gone
                pass
        self._client = None
        for out in self._out.values():
            self.spool.release(out.rid)
        if self._out:
            self.counters["records_resent_after_disconnect"] += len(self._out)
        self._out.clear()
        self._mids.clear()
        self._cursor = 0
        self._resend.clear()
        if self.track is not None:
            for rid in self.track.sent_ids():
                self.spool.release(rid)
            self.track.forget_all()  # everything still in the spool is replayed on the next connection
        with self._idle:
            self._idle.notify_all()
