"""The reference backend ingest: subscribe, reassemble, verify, dedupe, write session folders.

    ing = Ingest("mqtt://127.0.0.1:1883", "out/", share_group=None)     # or Ingest.from_config(IngestConfig)
    threading.Thread(target=ing.run, kwargs={"idle_exit": 5.0}).start()  ...  ing.stop(); ing.stats()

- Without a share group the ingest keeps a persistent broker session (fixed client id, clean start
  off, 1 day expiry): messages published while it is down are queued by the broker for it.
- With `share_group`, it subscribes to `$share/<group>/crowdcap/v1/#` (MQTT 5): workers split the
  load. Workers of one group must share OUT (reassembly and dedupe happen through the filesystem).
- A message is PUBACKed only after it is stored (chunks: after the chunk is on disk; manual acks),
  so an ingest crash never loses an acknowledged message; on a storage error (disk full) it is left
  unacknowledged and the ingest reconnects after a pause so the broker delivers it again.
- Bounded (uplink/backend/README in docs/wire-format.md "Receiver rules"): MQTT 5 Receive Maximum caps
  what the broker has in flight to us; paho's thread hands each message to a bounded queue and blocks
  when it is full, so a backlog or a flood waits in the broker, not in our memory; partial messages
  are capped per device and overall (reassembly.py); idle sessions are dropped from memory.
- Who may speak: with a device registry (registry.py), a message is stored only when its device is
  registered and its Ed25519 signature verifies; unknown devices are refused at the first chunk.
  A forged message is refused before dedupe, so it never makes the real one a "duplicate".
- Everything malformed is counted under `rejected[reason]` (one log line per reason, rate-limited)
  and never stops the ingest.
- End-to-end acks (uplink/backend/confirm.py): what is stored is made durable (syncfs/fsync) and then
  confirmed to the device on crowdcap/v1/<device>/ack; complete messages refused for good are named
  in the ack's `rejected` (never forged ones). status/telemetry arrive as plain JSON (uplink/plain.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections import Counter
from pathlib import Path

from uplink import plain, wire
from uplink.backend.config import IngestConfig
from uplink.backend.confirm import Confirmer
from uplink.backend.connection import Connection
from uplink.backend.nats_link import NatsLink, is_nats_url
from uplink.backend.reassembly import Reassembler, parse_claimed
from uplink.backend.registry import Registry
from uplink.backend.sink import Sink, safe_ident
from uplink.config import parse_broker
from uplink.identity import verify
from uplink.wire import WireError

log = logging.getLogger(__name__)

ROOT = "crowdcap/v1"
_STOP = object()


class Ingest:
    def __init__(self, broker_url: str | list[str], out_dir: str | os.PathLike, share_group: str | None = None, *,
                 client_id: str | None = None, protocol: str = "auto", limits: wire.Limits = wire.DEFAULT_LIMITS,
                 partial_timeout: float = 600.0, report_every: float = 30.0, workers: int = 2,
                 config: IngestConfig | None = None, registry: Registry | str | None = None) -> None:
        urls = [broker_url] if isinstance(broker_url, str) else list(broker_url)
        cfg = config or IngestConfig(brokers=urls, out=str(out_dir), share_group=share_group or "",
                                     client_id=client_id or "", protocol=protocol,  # type: ignore[arg-type]
                                     workers=workers, partial_timeout=partial_timeout)
        self.cfg = cfg
        self.nats = all(is_nats_url(u) for u in cfg.brokers)  # NATS-native: a shared durable consumer
        self.brokers = [] if self.nats else [parse_broker(u) for u in cfg.brokers]
        self.out = Path(cfg.out)
        self.share_group = cfg.share_group or None
        if self.share_group and any(c in self.share_group for c in "/+#"):
            raise ValueError(f"share_group: may not contain / + or #, got {self.share_group!r}")
        self.limits = limits
        self.sink = Sink(self.out, depth_png=getattr(cfg, "depth_png", "fast"))
        if getattr(cfg, "mcap", False):  # an MCAP per session, appended as frames are committed
            from uplink.backend.mcap_live import LiveMcap

            self.sink.live = LiveMcap()
        self.confirmer = Confirmer(self.sink)
        self.reassembler = Reassembler(self.out / ".partials", limits, timeout=cfg.partial_timeout,
                                       max_bytes=int(cfg.partial_max_mb * 1024**2), max_partials=cfg.partial_max,
                                       device_max_bytes=int(cfg.device_partial_max_mb * 1024**2),
                                       device_max_partials=cfg.device_partial_max)
        if isinstance(registry, str | os.PathLike):
            registry = Registry(registry)
        elif registry is None and cfg.registry:
            registry = Registry(cfg.registry)
        self.registry: Registry | None = registry
        digest = hashlib.sha1(str(self.out.resolve()).encode()).hexdigest()[:10]
        self.persistent = self.share_group is None and not self.nats
        self.client_id = cfg.client_id or (f"crowdcap-ingest-{digest}" if self.share_group is None
                                           else f"crowdcap-ingest-{self.share_group}-{os.getpid()}-{os.urandom(2).hex()}")
        self.protocol = cfg.protocol
        self.report_every = report_every
        self.counters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._reject_logged: dict[str, float] = {}
        self._stop = threading.Event()
        self._last_message = time.monotonic()
        self._retry = threading.Event()
        self.workers = cfg.workers
        self._queue: queue.Queue = queue.Queue(maxsize=cfg.queue)
        self._threads: list[threading.Thread] = []
        self.retry_delay = 2.0
        self._lock = threading.Lock()
        self.lag: dict[str, float] = {}  # device -> seconds from capture to arrival of its latest live frame
        self._conn: Connection | None = None
        self.on_stored = None  # optional hook(device_id, message_id, what) after a message is durable

    @classmethod
    def from_config(cls, cfg: IngestConfig, **kw) -> Ingest:
        return cls(cfg.brokers, cfg.out, config=cfg, **kw)

    # ---- message path (worker threads) -------------------------------------------------------

    def handle(self, topic_name: str, payload: bytes) -> str:
        """Process one MQTT payload; returns what happened. Never raises on bad input."""
        self._last_message = time.monotonic()
        arrival = time.time()
        parts = topic_name.split("/")
        if len(parts) < 4 or parts[0] != "crowdcap" or parts[1] != "v1":
            return self._reject("bad_topic")
        if parts[3] in ("cmd", "ack") and len(parts) == 4:
            return "ignored"  # downlink commands and acks are not ours
        source = parts[2]
        try:
            safe_ident(source)
            if self.registry is not None and not self.registry.known(source):
                raise WireError("unknown_device", source)  # before any state: fake ids cost nothing
            if len(parts) == 4 and parts[3] in plain.KINDS and payload[:1] == b"{":
                return self._plain(source, parts[3], payload, arrival)
            chunk = wire.parse_chunk(payload, self.limits)
            data = self.reassembler.add(source, chunk)
            if data is None:
                self.confirmer.chunk_of_confirmed(source, chunk.message_id)  # our ack was lost: again
                with self._lock:
                    self.counters["chunks_buffered"] += 1
                return "partial"
            try:
                return self._message(source, data, arrival, chunk.message_id, chunk.signed)
            except WireError as e:
                if getattr(e, "final", False):  # never for forged, unverified or corrupt ones
                    self.confirmer.rejected(source, chunk.message_id, e.reason)
                raise
        except WireError as e:
            return self._reject(e.reason, source, str(e))
        except (OSError, MemoryError) as e:
            # Not the message's fault (disk full, I/O error): it is not acknowledged, and the broker
            # delivers it again after run() reconnects. Counted, never dropped.
            with self._lock:
                self.counters["storage_errors"] += 1
                n = self.counters["storage_errors"]
            if _worth_logging(n):  # a full disk fails every message: not a log line each
                log.error("ingest: storing a message failed (will retry; %d so far): %s", n, e)
            self._retry.set()
            return "retry"
        except Exception:  # a bug must not take the ingest down; counted and logged
            what = self._reject("internal_error")
            with self._lock:
                n = self.rejected["internal_error"]
            if _worth_logging(n):
                log.exception("ingest: unexpected error (%d so far)", n)
            return what

    def _message(self, source: str, data: bytes, arrival: float, message_id: bytes, signed: bool) -> str:
        data, signature = wire.split_signature(data, signed)
        if self.registry is not None:
            # first: is it the device's own? (the signature covers id, header and body CRC; it is
            # checked on the raw bytes, before anything is decoded or could be reported back)
            reason = self.registry.check(source, message_id, data, signature)
            if reason is not None:
                raise WireError(reason, f"{source} message {message_id.hex()}")
        try:
            msg = wire.decode(data, self.limits)
            if msg.device_id != source:
                raise WireError("topic_mismatch", f"{msg.device_id!r} on {source!r}'s topic")
            what = self.sink.write(msg, arrival, len(data))
        except WireError as e:
            # Refused for good, and (with a registry) provably the device's own message: the ack's
            # `rejected` may name it so the device stops re-sending. Anything refused above (forged,
            # unsigned, unknown device) is never reported: a forger must not cancel a real record.
            e.final = e.reason != "topic_mismatch"  # type: ignore[attr-defined]
            raise
        self.confirmer.stored(source, message_id, msg, what)
        self.reassembler.completed(message_id)  # only a verified message makes later copies late duplicates
        with self._lock:
            self.counters[what] += 1
            self.counters["messages"] += 1
            self.counters["bytes"] += len(data)
            if msg.historical:
                self.counters["historical"] += 1
            elif what == "frame":
                self.lag[msg.device_id] = max(0.0, arrival - msg.t_capture_ns / 1e9)
        if self.sink.opened_session is not None:
            self._log_session(*self.sink.take_opened())
        if self.on_stored is not None:
            self.on_stored(msg.device_id, message_id, what)
        return what

    def _plain(self, source: str, kind: str, payload: bytes, arrival: float) -> str:
        """status / telemetry as plain JSON (uplink/plain.py); spooled telemetry is confirmed like frames."""
        msg, message_id = plain.decode(kind, source, payload, self.limits)
        if self.registry is not None and message_id is not None:
            # a confirmation frees the device's record: only the device itself may cause one
            signed = plain.signature_of(payload)
            if signed is None:
                raise WireError("unsigned", f"{source} {kind} seq {msg.seq}")
            if not verify(self.registry.key(source), signed[2], plain.signed_bytes(signed[1], signed[0])):
                raise WireError("bad_signature", f"{source} {kind} seq {msg.seq}")
        what = self.sink.write(msg, arrival, len(payload))
        if message_id is not None:
            self.confirmer.stored(source, message_id, msg, what)
        with self._lock:
            self.counters[what] += 1
            self.counters["messages"] += 1
        return what

    def _log_session(self, device: str, session: str, existing: bool) -> None:
        log.info("ingest: session %s/%s %s", device, session, "resumed" if existing else "opened")

    def _reject(self, reason: str, source: str = "", detail: str = "") -> str:
        now = time.monotonic()
        with self._lock:
            self.rejected[reason] += 1
            n = self.rejected[reason]
            last = self._reject_logged.get(reason)
            due = last is None or now - last >= 60.0
            if due:
                self._reject_logged[reason] = now
        if due:  # one line per reason per minute, with the running count: never a line per message
            log.warning("ingest: rejected %s (%d so far)%s", reason, n, f": {detail[:200]}" if detail else "")
        return "rejected"

    def _recover(self) -> None:
        for folder in self.reassembler.leftovers():
            try:
                source, message_id, signed = parse_claimed(folder)
                data = self.reassembler.assemble(folder)
                if data is not None:
                    self._message(source, data, time.time(), message_id, signed)
            except WireError as e:
                self._reject(e.reason)
            except Exception:  # noqa: BLE001 - startup must go on; counted
                log.exception("ingest: leftover partial %s could not be stored", folder.name)
                self._reject("internal_error")
        self.reassembler.sweep()
        for dev in self.out.iterdir() if self.out.exists() else []:
            if dev.is_dir() and not dev.name.startswith("."):
                for ses in dev.iterdir():
                    if ses.is_dir() and (ses / "frames.jsonl").exists():
                        # regenerate text files and report only where a previous run died before it
                        report = ses / "report.html"
                        if not report.exists() or report.stat().st_mtime < (ses / "frames.jsonl").stat().st_mtime:
                            self.sink.session(dev.name, ses.name).dirty = True
        self.sink.take_opened()

    # ---- worker threads ------------------------------------------------------------------------

    def submit(self, topic_name: str, payload: bytes, ack) -> None:  # noqa: ANN001
        """Called by the connection for every message (paho's thread): blocks while the queue is full,
        so the broker holds the backlog; `ack()` is called once the message is stored or refused."""
        while not self._stop.is_set():
            try:
                self._queue.put((topic_name, payload, ack), timeout=0.5)
                return
            except queue.Full:
                with self._lock:
                    self.counters["queue_full_waits"] += 1

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            topic_name, payload, ack = item
            if self.handle(topic_name, payload) != "retry":
                ack()  # manual ack: a message is acknowledged only once stored (or refused for good)

    def _start_workers(self) -> None:
        self._threads = [threading.Thread(target=self._work, name=f"ingest-{i}", daemon=True)
                         for i in range(self.workers)]
        for t in self._threads:
            t.start()

    def _stop_workers(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)  # after what was received: it is finished (and acked) first
        for t in self._threads:
            t.join(60)
        self._threads = []

    # ---- run loop ------------------------------------------------------------------------------

    def run(self, idle_exit: float | None = None) -> dict:
        """Serve until stop() (or `idle_exit` seconds without a message); returns stats()."""
        if self.registry is None:
            log.warning("ingest: no device registry configured: frames from anyone on the broker are stored "
                        "(set [ingest] registry, docs/deployment.md)")
        self._recover()
        self._start_workers()
        conn = self._conn = NatsLink(self) if self.nats else Connection(self, ROOT)
        try:
            conn.open()
        except BaseException:
            self._stop_workers()
            raise
        self.confirmer.start(lambda t, p: conn.client.publish(t, p, qos=1) if conn.client is not None else None)
        self._last_message = time.monotonic()
        last_report = last_expire = time.monotonic()
        expire_every = max(0.5, min(10.0, self.cfg.partial_timeout / 4))
        try:
            while not self._stop.wait(0.2):
                now = time.monotonic()
                if idle_exit is not None and now - self._last_message >= idle_exit:
                    break
                if self._retry.is_set() and not self._stop.wait(self.retry_delay):
                    self._retry.clear()
                    with self._lock:
                        self.counters["redelivery_reconnects"] += 1
                    conn.reconnect()
                conn.watch()
                if now - last_expire >= expire_every:
                    self.reassembler.expire()
                    last_expire = now
                if now - last_report >= self.report_every:
                    self.reassembler.sweep()
                    self._finalize(throttle=True)
                    self._evict()
                    last_report = now
        finally:
            self._stop_workers()
            self.confirmer.stop()  # the last confirmations go out before the link closes
            conn.close()
            self._finalize()
            for device, session in self.sink.keys():
                log.info("ingest: session %s/%s closed (ingest stopping)", device, session)
            if self.sink.live is not None:
                self.sink.live.close()  # summary + footer: the files open directly
        return self.stats()

    def _evict(self) -> None:
        for device, session in self.sink.evict_idle(self.cfg.session_idle, self.cfg.max_sessions):
            log.info("ingest: session %s/%s closed (idle)", device, session)
            with self._lock:
                self.counters["sessions_closed"] += 1
                if not any(d == device for d, _ in self.sink.keys()):
                    self.lag.pop(device, None)

    def _finalize(self, throttle: bool = False) -> None:
        """Regenerate dirty sessions' text files and reports; a failure is counted, never fatal
        (what is committed in frames.jsonl is untouched by it)."""
        try:
            self.sink.finalize_all(only_dirty=True, throttle=throttle)
        except Exception:  # noqa: BLE001 - the ingest must keep storing frames
            log.exception("ingest: writing session files/report failed")
            with self._lock:
                self.counters["finalize_errors"] += 1

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def connected(self) -> bool:
        """True while connected and subscribed (wait for this before starting devices in a demo)."""
        return self._conn is not None and self._conn.connected

    def lag_snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.lag)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def stats(self) -> dict:
        with self._lock:
            return {"connected": self.connected, **dict(self.counters), "confirm": dict(self.confirmer.counters),
                    "sink": dict(self.sink.counters),
                    "rejected": dict(self.rejected), "rejected_total": sum(self.rejected.values()),
                    "reassembly": dict(self.reassembler.counters), "partials": self.reassembler.partials(),
                    "partial_bytes": self.reassembler.stats()["partial_bytes"], "queue": self._queue.qsize(),
                    "broker": self._conn.url if self._conn is not None else None,
                    "sessions_open": len(self.sink.keys()),
                    "sessions": [str(s.root.relative_to(self.out)) for s in self.sink.sessions()]}


def _worth_logging(n: int) -> bool:
    """The first few occurrences of a repeating error, then every 1000th."""
    return n <= 3 or n % 1000 == 0
