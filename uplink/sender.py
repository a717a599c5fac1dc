"""`Sender`: one thread that moves spool records to the broker (paho-mqtt 2.x, QoS 1) and back.

It drives paho's socket itself (`loop_read/loop_write/loop_misc` on a select with a wake-up pipe), so
publishing, PUBACK handling and reconnecting all happen in this one thread: no locks around paho.

- A fresh paho client per connection, clean start: nothing is kept in paho's memory across a
  disconnect; after a reconnect the spool is replayed from its oldest record (the ingest dedupes).
- `delivery = "ingest"` (default): a PUBACK only frees the window; a record leaves the spool when the
  ingest's ack (crowdcap/v1/<device>/ack) confirms it, and is resent when that is overdue
  (uplink/delivery.py). `delivery = "broker"`: it leaves at its last PUBACK (backends without acks).
- Several broker URLs (cluster nodes): stay on the one that works; on a failed connect or a dropped
  link try the next one; back off once the whole list failed.
- Connection failures and refusals are logged at WARNING with the reason (rate-limited) and kept in
  `last_error` for status.
- MQTT 5 first; if the broker refuses it (or hangs up before CONNACK), 3.1.1 from then on.
- At most `inflight` chunks await PUBACK (and never more than the broker's Receive Maximum), so a
  backlog replay cannot flood the broker. A record is acked in the spool once every chunk is PUBACKed.
- Records written before the current connection came up are backlog: sent with FLAG_HISTORICAL.
- Reconnect delay: exponential from backoff_min to backoff_max with full jitter.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from uplink import plain, wire
from uplink.budget import TokenBucket
from uplink.config import UplinkConfig, parse_brokers
from uplink.delivery import Confirmations, undelivered_reason
from uplink.mqtt_client import KIND_TOPIC, LinkTrouble, pump, topic
from uplink.sender_connection import BrokerConnection
from uplink.sender_events import PahoEvents
from uplink.spool import PRIO_CONTROL, Spool

log = logging.getLogger(__name__)

_NO_CONFIRM = "no confirmation from the ingest"

@dataclass
class _Outgoing:
    rid: int
    chunks: list[bytes]
    retain: bool
    topic: str
    size: int = 0
    next_index: int = 0
    unacked: set[int] = field(default_factory=set)  # chunk indexes published, not yet PUBACKed


class Sender(PahoEvents, BrokerConnection):
    """Ships `spool` to `cfg.broker`. `start()` / `stop()`; thread-safe `wake()`, `stats()`, `drained()`."""

    signer = None  # set by the stage: data -> Ed25519 signature over each message id (wire v1.1)

    def __init__(self, cfg: UplinkConfig, device_id: str, spool: Spool, *, will_payload: bytes,
                 status_payload: Callable[[], bytes | None] | None = None) -> None:
        self.urls = parse_brokers(cfg.broker)
        if not self.urls:
            raise ValueError("broker: no broker URL")
        self._node = 0
        self.cfg = cfg
        self.trouble = LinkTrouble(log)
        # at most half the spool may be sent-but-unconfirmed (not evictable): the rest can make room
        self.track = (Confirmations(spool, cfg.confirm_timeout, min(int(cfg.confirm_window_mb * 2**20), spool.quota // 2))
                      if cfg.delivery == "ingest" else None)
        self._resend: list[int] = []
        self._subs: dict[int, str] = {}  # SUBSCRIBE mid -> topic, until its SUBACK
        self._resub: dict[str, float] = {}  # topic -> when to subscribe again (the broker refused it)
        self._urgent_t = 0.0
        self.device_id = device_id
        self.spool = spool
        self.will_payload = will_payload
        self.status_payload = status_payload  # retained "online" status sent on every connect
        self.on_command: Callable[[bytes], None] | None = None
        self.bucket = TokenBucket(cfg.bandwidth)
        self.counters: Counter[str] = Counter()
        self._proto = mqtt.MQTTv311 if cfg.protocol == "mqtt311" else mqtt.MQTTv5
        self._proto_confirmed = cfg.protocol != "auto"
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._connected = False
        self._connack: int | None = None
        self._window = cfg.inflight
        self._max_payload = cfg.max_payload
        self._strikes = 0
        self._acks_this_connection = 0
        self._last_progress = time.monotonic()
        self._out: dict[int, _Outgoing] = {}  # rid -> record being sent
        self._mids: dict[int, tuple[int, int]] = {}  # paho mid -> (rid, chunk index)
        self._cursor = 0
        self._live_from = 0  # records with id < this were spooled before the link came up: historical
        self._direct: list[tuple[str, bytes, bool]] = []  # status / immediate messages (not spooled)
        self._direct_lock = threading.Lock()
        self._rate_bytes = 0
        self._rate_t = time.monotonic()
        self.bytes_per_s = 0.0
        self._idle = threading.Condition()

    # ---- public, any thread ------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.urls[self._node][1]

    @property
    def port(self) -> int:
        return self.urls[self._node][2]

    @property
    def tls(self) -> bool:
        return self.urls[self._node][3]

    @property
    def last_error(self) -> str:
        return self.trouble.last_error

    @last_error.setter
    def last_error(self, reason: str) -> None:
        if reason:
            self.trouble.report(reason)
        else:
            self.trouble.ok()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="uplink-sender", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._wake_r.close()
        self._wake_w.close()

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass

    def send_direct(self, topic_name: str, payload: bytes, retain: bool) -> None:
        """Publish without spooling (latest status): sent now if connected, else on the next connect."""
        with self._direct_lock:
            if retain:
                self._direct = [d for d in self._direct if d[0] != topic_name]
            self._direct.append((topic_name, payload, retain))
        self.wake()

    def direct_pending(self) -> bool:
        return bool(self._direct)

    @property
    def connected(self) -> bool:
        return self._connected

    def inflight(self) -> int:
        return len(self._mids)

    def stats(self) -> dict:
        down = self.trouble.since
        return {"connected": self._connected, "link": "up" if self._connected else ("down" if down else "connecting"),
                "link_down_s": None if down is None or self._connected else round(time.monotonic() - down, 1),
                "broker_node": f"{self.urls[self._node][0]}://{self.host}:{self.port}", "nodes": len(self.urls),
                "delivery": self.cfg.delivery, "inflight_chunks": len(self._mids), "window": self._window,
                "max_payload": self._max_payload, "last_error": self.last_error,
                "protocol": "mqtt5" if self._proto == mqtt.MQTTv5 else "mqtt311",
                "bytes_per_s": round(self.bytes_per_s, 1), **dict(self.counters),
                **(self.track.stats() if self.track is not None else {})}

    def undelivered_reason(self) -> str:
        """Why records are still in the spool (for `run`'s exit 3), in words an operator can act on."""
        return undelivered_reason(len(self.spool), len(self._mids), self._connected, self.last_error, self.track)

    def wait_idle(self, timeout: float) -> bool:
        """True once the spool is empty and nothing is in flight (everything PUBACKed)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while len(self.spool) or self._mids:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    # ---- the sender thread ----------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if not self._try_connect():
                attempt += 1
                self.counters["connect_failures"] += 1
                self._next_node()
                if self._node != 0:  # more nodes to try before backing off
                    self._stop.wait(0.05)
                    continue
                cycles = attempt // len(self.urls)
                delay = random.uniform(0, min(self.cfg.backoff_max, self.cfg.backoff_min * 2 ** min(cycles, 20)))
                self._stop.wait(max(delay, self.cfg.backoff_min / 2))
                continue
            attempt = 0
            try:
                self._serve()
            except Exception:  # never let the sender thread die: log, drop the link, reconnect
                log.exception("uplink sender error; reconnecting")
                self.counters["sender_errors"] += 1
            self._teardown()
            if not self._stop.is_set():
                if not self.last_error:
                    self.last_error = f"lost the connection to {self.host}:{self.port}"
                self._next_node()  # the node we were on may be the one that died
                self._stop.wait(random.uniform(0, self.cfg.backoff_min))

    def _next_spool_id(self) -> int:
        ids = self.spool.pending_after(0, 1 << 30)
        return (ids[-1] + 1) if ids else 0

    def _pump(self, timeout: float) -> int:
        return pump(self._client, self._wake_r, timeout)

    def _serve(self) -> None:
        last_sync = last_due = time.monotonic()
        sync_every = self.cfg.fsync_interval_ms / 1000.0
        while not self._stop.is_set():
            if self.track is not None and time.monotonic() - last_due >= 0.25:
                last_due = time.monotonic()
                self._resend.extend(self.track.due(last_due))
                self._check_confirmations()
            if self._resub:
                self._resubscribe_due()
            self._send_direct()
            wait = self._fill_window()
            rc = self._pump(min(wait, sync_every, 0.5))
            if rc != mqtt.MQTT_ERR_SUCCESS or not self._connected:
                self.counters["disconnects"] += 1
                self._note_fruitless_connection()
                return
            now = time.monotonic()
            if self._mids and now - self._last_progress > max(10.0, 2.0 * self.cfg.keepalive):
                # Connected but no PUBACK for a long time (a wedged broker or a half-dead path that
                # still answers pings): drop the link; the spool resends on the next connection.
                self.counters["stalled_reconnects"] += 1
                self.last_error = "no PUBACK progress; reconnecting"
                return
            if not self._mids:
                self._last_progress = now
            if self.spool.fsync == "interval" and now - last_sync >= sync_every:
                self.spool.sync()
                last_sync = now
            if now - self._rate_t >= 1.0:
                self.bytes_per_s = self._rate_bytes / (now - self._rate_t)
                self._rate_bytes, self._rate_t = 0, now

    def _check_confirmations(self) -> None:
        """Connected, the broker takes everything, but the ingest confirms nothing: say so (WARNING,
        last_error) — a backend without acks would otherwise fill the spool in silence."""
        st = self.track.stats()
        quiet = self.track.quiet_for()
        limit = max(1.0, 3 * self.cfg.confirm_timeout)
        if self.track.unconfirmed() and st["oldest_unconfirmed_age_s"] > limit and quiet > limit:
            if not self.last_error.startswith(_NO_CONFIRM):
                self.last_error = (f"{_NO_CONFIRM} for {quiet:.0f} s ({self.track.unconfirmed()} record(s) "
                                   "acknowledged by the broker wait for the ingest); is `crowdcap ingest` "
                                   "running? a backend without acks needs uplink.delivery = \"broker\"")
        elif self.last_error.startswith(_NO_CONFIRM) and quiet < limit:
            self.trouble.last_error = ""  # confirmations flow again

    def _note_fruitless_connection(self) -> None:
        """A broker that silently drops the link on a too-large publish (no Maximum Packet Size
        announced, or MQTT 3.1.1) would make us resend the same record forever: after three
        connections in a row that published but got no PUBACK at all, halve the chunk size."""
        if self._mids and self._acks_this_connection == 0:
            self._strikes += 1
            if self._strikes >= 3 and self._max_payload > 4096:
                self.last_error = (f"the broker dropped the link on publishes of {self._max_payload} bytes without "
                                   "acknowledging any (packet too large?): halving the chunk size")
                self._max_payload = max(4096, self._max_payload // 2)
                self._strikes = 0
                self.counters["payload_limit_halved"] += 1
        else:
            self._strikes = 0

    def _send_direct(self) -> None:
        if not self._direct:
            return
        with self._direct_lock:
            items, self._direct = self._direct, []
        for t, payload, retain in items:
            self._client.publish(t, payload, qos=1, retain=retain)

    def _fill_window(self) -> float:
        """Publish chunks until the window is full; returns how long the loop may sleep."""
        while len(self._mids) < self._window:
            out = self._next_outgoing()
            if out is None:
                return 0.5
            payload = out.chunks[out.next_index]
            wait = self.bucket.wait_time(len(payload))
            if wait > 0:
                self.counters["budget_waits"] += 1
                return wait
            info = self._client.publish(out.topic, payload, qos=1, retain=out.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._connected = False
                return 0.0
            self.bucket.consume(len(payload))
            self._mids[info.mid] = (out.rid, out.next_index)
            out.unacked.add(out.next_index)
            out.next_index += 1
            self._rate_bytes += len(payload)
            self.counters["chunks_sent"] += 1
            self.counters["bytes_sent"] += len(payload)
        return 0.5

    def _next_outgoing(self) -> _Outgoing | None:
        for out in self._out.values():
            if out.next_index < len(out.chunks):
                return out
        while self._resend:  # broker-acknowledged long ago, never confirmed: same message id again
            out = self._outgoing(self._resend.pop(0), again=True)
            if out is not None:
                return out
        while self.track is None or self.track.may_send_more():
            ids = self.spool.pending_after(self._cursor, 1)
            if not ids:
                return None
            self._cursor = ids[0]
            out = self._outgoing(ids[0])
            if out is not None:
                return out
        self.counters["confirm_window_waits"] += 1
        # The window is full of records waiting for the ingest: command results and events still go
        # (an operator's command must be answered while the ingest is down).
        now = time.monotonic()
        if now - self._urgent_t >= 0.5:
            self._urgent_t = now
            for rid in self.spool.urgent_after(self._cursor, PRIO_CONTROL, limit=256):
                out = self._outgoing(rid)
                if out is not None:
                    self.counters["control_past_window"] += 1
                    return out
        return None

    def _outgoing(self, rid: int, again: bool = False) -> _Outgoing | None:
        if rid in self._out or (not again and self.track is not None and self.track.is_sent(rid)):
            return None  # being sent, or sent ahead of the cursor and awaiting its confirmation
        got = self.spool.read(rid)
        if got is None:
            return None  # confirmed or evicted meanwhile
        data, rec = got
        mid = self.spool.epoch + rid.to_bytes(8, "big")
        historical = rec.recovered or rid < self._live_from
        if rec.kind in (wire.STATUS, wire.TELEMETRY) and data[:1] == b"{":  # plain JSON: one payload, no chunk
            parts = [plain.for_sending(data, mid, historical, self.signer)]
        else:
            parts = wire.chunks(data, mid, self._max_payload, self.signer)
            if historical:
                parts[0] = wire.set_chunk0_flags(parts[0], wire.peek_chunk0_flags(parts[0]) | wire.FLAG_HISTORICAL)
        if historical:
            self.counters["historical_sent"] += 1
        out = _Outgoing(rid, parts, bool(rec.flags & 1), topic(self.device_id, KIND_TOPIC.get(rec.kind, "event")),
                        size=len(data))
        self._out[rid] = out
        return out
