"""The sender's paho callbacks: CONNACK, disconnect, PUBACK, incoming commands and acks.

A mixin of `uplink.sender.Sender` (split out to keep that module readable). The callbacks run inside
`Sender._pump`, in the sender thread, and use its state directly: no locks around paho.
"""

from __future__ import annotations

import logging
import time

from uplink import wire
from uplink.mqtt_client import topic
from uplink.spool import PRIO_NAMES

log = logging.getLogger("uplink.sender")

# PUBACK reason codes that say "later", not "never": 0x91 packet identifier in use, 0x97 quota exceeded
_TRANSIENT_PUBACK = {0x91, 0x97}


class PahoEvents:
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        self._connack = 0 if not reason_code.is_failure else int(reason_code.value)
        self._connack_name = reason_code.getName() if reason_code.is_failure else ""
        recv_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        # keep two of the broker's Receive Maximum slots for status messages sent outside the window
        self._window = min(self.cfg.inflight, max(1, recv_max - 2)) if recv_max else self.cfg.inflight
        # MQTT 5 brokers may announce a smaller packet limit than our max_payload: chunk below it
        # (300 bytes of room for the fixed header, topic and properties).
        max_packet = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
        self._acks_this_connection = 0
        if max_packet and max_packet - 300 < self._max_payload:
            self._max_payload = max(wire.CHUNK_HEADER_SIZE + 256, max_packet - 300)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if self._connected and reason_code is not None and reason_code.is_failure and reason_code.value != 0x80:
            self.last_error = f"broker {self.host}:{self.port} closed the connection: {reason_code.getName()}"
        self._connected = False

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties) -> None:  # noqa: ANN001
        name = self._subs.pop(mid, None)
        if name is None or not any(rc.is_failure for rc in reason_code_list):
            return
        # Refused for now: NATS answers 0x80 while the JetStream streams behind its MQTT sessions
        # elect a new leader (a node died). Without the ack topic no confirmation ever arrives on
        # this connection and the records wait forever: ask again shortly.
        self.counters["subscribe_refused"] += 1
        log.warning("broker %s:%s refused the subscription to %s (%s); retrying", self.host, self.port, name,
                    ", ".join(rc.getName() for rc in reason_code_list))
        self._resub[name] = time.monotonic() + 1.0

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        entry = self._mids.pop(mid, None)
        if entry is None:
            return  # a direct (status) publish
        rid, index = entry
        out = self._out.get(rid)
        if out is None:
            return
        if reason_code is not None and reason_code.is_failure and reason_code.value in _TRANSIENT_PUBACK:
            # Throttled (managed brokers answer "Quota exceeded" under load): not the record's fault.
            # Drop the link; the record stays in the spool and is re-sent after the reconnect delay.
            self.counters[f"broker_busy_{reason_code.getName().replace(' ', '_')}"] += 1
            self._acks_this_connection += 1  # an answer: not a reason to shrink the chunk size
            self.last_error = f"broker refused a publish for now ({reason_code.getName()}); reconnecting"
            self._connected = False
            return
        if reason_code is not None and reason_code.is_failure:
            # The broker refused it (e.g. packet too large, not authorised): retrying would loop
            # forever. Drop the record and count it under the broker's reason: never silent.
            rec = self.spool.record(rid)
            name = PRIO_NAMES.get(rec.priority, "?") if rec else "?"
            self.spool.evictions[f"broker_refused_{name}_{reason_code.getName().replace(' ', '_')}"] += 1
            self.last_error = f"broker refused a {name} record: {reason_code.getName()} (dropped, counted)"
            self.spool.ack(rid)
            del self._out[rid]
            self._mids = {m: e for m, e in self._mids.items() if e[0] != rid}
            self._notify_idle()
            return
        self._acks_this_connection += 1
        self._last_progress = time.monotonic()
        out.unacked.discard(index)
        if not out.unacked and out.next_index == len(out.chunks):
            if self.track is None:
                self.spool.ack(rid)
            else:  # the broker has it; the ingest's ack makes it leave the spool. Until then it is
                self.track.sent(rid, out.size)  # not evicted (it may well be delivered): the window bounds that
            del self._out[rid]
            self.counters["records_sent"] += 1
            self._notify_idle()

    def _notify_idle(self) -> None:
        with self._idle:
            self._idle.notify_all()

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        if self.track is not None and msg.topic == topic(self.device_id, "ack"):
            done, rejected = self.track.on_ack(bytes(msg.payload))
            for rid in done + rejected:
                self._out.pop(rid, None)  # a resend under way is moot now
            if done or rejected:
                self._notify_idle()
            return
        if msg.topic == topic(self.device_id, "cmd") and self.on_command is not None:
            self.counters["commands_received"] += 1
            try:
                self.on_command(bytes(msg.payload))
            except Exception:  # a bad command handler must not take the uplink down
                log.exception("command callback failed")
                self.counters["command_callback_errors"] += 1
