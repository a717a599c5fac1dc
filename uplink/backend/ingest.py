"""The reference backend ingest: subscribe, reassemble, verify, dedupe, write session folders.

    ing = Ingest("mqtt://127.0.0.1:1883", "out/", share_group=None)
    threading.Thread(target=ing.run, kwargs={"idle_exit": 5.0}).start()  ...  ing.stop(); ing.stats()

- Without a share group the ingest keeps a persistent broker session (fixed client id, clean start
  off, 1 day expiry): messages published while it is down are queued by the broker for it.
- With `share_group`, it subscribes to `$share/<group>/crowdcap/v1/#` (MQTT 5): workers split the
  load. Workers of one group must share OUT (reassembly and dedupe happen through the filesystem).
- A message is PUBACKed only after it is stored (chunks: after the chunk is on disk; manual acks),
  so an ingest crash never loses an acknowledged message; on a storage error (disk full) it is left
  unacknowledged and the ingest reconnects after a pause so the broker delivers it again.
- Everything malformed is counted under `rejected[reason]` and never stops the ingest.
- End-to-end acks (uplink/backend/confirm.py): what is stored is fsynced and confirmed to the device
  on crowdcap/v1/<device>/ack; complete messages refused for good are named in the ack's `rejected`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paho.mqtt.client as mqtt

from uplink import plain, wire
from uplink.backend.confirm import Confirmer
from uplink.backend.reassembly import Reassembler
from uplink.backend.sink import Sink, safe_ident
from uplink.config import parse_broker
from uplink.wire import WireError

log = logging.getLogger(__name__)

ROOT = "crowdcap/v1"


class Ingest:
    def __init__(self, broker_url: str, out_dir: str | os.PathLike, share_group: str | None = None, *,
                 client_id: str | None = None, protocol: str = "auto", limits: wire.Limits = wire.DEFAULT_LIMITS,
                 partial_timeout: float = 600.0, report_every: float = 30.0, workers: int = 2) -> None:
        _, self.host, self.port, self.tls = parse_broker(broker_url)
        self.out = Path(out_dir)
        self.share_group = share_group or None
        if self.share_group and any(c in self.share_group for c in "/+#"):
            raise ValueError(f"share_group: may not contain / + or #, got {share_group!r}")
        self.limits = limits
        self.sink = Sink(self.out)
        self.confirmer = Confirmer(self.sink)
        self.reassembler = Reassembler(self.out / ".partials", limits, timeout=partial_timeout)
        digest = hashlib.sha1(str(self.out.resolve()).encode()).hexdigest()[:10]
        self.persistent = self.share_group is None
        self.client_id = client_id or (f"crowdcap-ingest-{digest}" if self.persistent
                                       else f"crowdcap-ingest-{self.share_group}-{os.getpid()}-{os.urandom(2).hex()}")
        self.protocol = protocol
        self.report_every = report_every
        self.counters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._last_message = time.monotonic()
        self._hung_up = False
        self._retry = threading.Event()
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self.retry_delay = 2.0
        self._lock = threading.Lock()

    # ---- message path (paho's network thread) ------------------------------------------------

    def handle(self, topic_name: str, payload: bytes) -> str:
        """Process one MQTT payload; returns what happened. Never raises on bad input."""
        self._last_message = time.monotonic()
        arrival = time.time()
        parts = topic_name.split("/")
        if len(parts) < 4 or parts[0] != "crowdcap" or parts[1] != "v1":
            return self._reject("bad_topic")
        if parts[3] in ("cmd", "ack") and len(parts) == 4:
            return "ignored"  # downlink commands and our own acks are not device messages
        source = parts[2]
        chunk = None
        try:
            safe_ident(source)
            if len(parts) == 4 and parts[3] in plain.KINDS and payload[:1] == b"{":
                return self._plain(source, parts[3], payload, arrival)
            chunk = wire.parse_chunk(payload, self.limits)
            data = self.reassembler.add(source, chunk)
            if data is None:
                self.confirmer.chunk_of_confirmed(source, chunk.message_id)
                with self._lock:
                    self.counters["chunks_buffered"] += 1
                return "partial"
            try:
                return self._message(source, data, arrival, chunk.message_id)
            except WireError as e:
                self.confirmer.rejected(source, chunk.message_id, e.reason)
                raise
        except WireError as e:
            return self._reject(e.reason)
        except (OSError, MemoryError) as e:
            # Not the message's fault (disk full, I/O error): it is not acknowledged, and the broker
            # delivers it again after run() reconnects. Counted, never dropped.
            if chunk is not None:
                self.reassembler.forget(chunk.message_id)  # its redelivered chunks must assemble again
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

    def _message(self, source: str, data: bytes, arrival: float, message_id: bytes | None = None) -> str:
        msg = wire.decode(data, self.limits)
        if msg.device_id != source:
            raise WireError("topic_mismatch", f"{msg.device_id!r} on {source!r}'s topic")
        what = self.sink.write(msg, arrival, len(data))
        if message_id is not None:
            self.confirmer.stored(source, message_id, msg, what)
        with self._lock:
            self.counters[what] += 1
            self.counters["messages"] += 1
            if msg.historical:
                self.counters["historical"] += 1
        return what

    def _plain(self, source: str, kind: str, payload: bytes, arrival: float) -> str:
        """status / telemetry as plain JSON (uplink/plain.py); spooled telemetry is confirmed like frames."""
        msg, message_id = plain.decode(kind, source, payload, self.limits)
        what = self.sink.write(msg, arrival, len(payload))
        if message_id is not None:
            self.confirmer.stored(source, message_id, msg, what)
        with self._lock:
            self.counters[what] += 1
            self.counters["messages"] += 1
        return what

    def _reject(self, reason: str) -> str:
        with self._lock:
            self.rejected[reason] += 1
        return "rejected"

    def _recover(self) -> None:
        for folder in self.reassembler.leftovers():
            try:
                data = self.reassembler.assemble(folder)
                if data is not None:
                    self._message(_source_of(folder), data, time.time())
            except WireError as e:
                self._reject(e.reason)
            except Exception:  # noqa: BLE001 - startup must go on; counted
                log.exception("ingest: leftover partial %s could not be stored", folder.name)
                self._reject("internal_error")
        for dev in self.out.iterdir() if self.out.exists() else []:
            if dev.is_dir() and not dev.name.startswith("."):
                for ses in dev.iterdir():
                    if ses.is_dir() and (ses / "frames.jsonl").exists():
                        session = self.sink.session(dev.name, ses.name)
                        # regenerate text files and report only where a previous run died before it
                        report = ses / "report.html"
                        session.dirty = not report.exists() or \
                            report.stat().st_mtime < (ses / "frames.jsonl").stat().st_mtime

    # ---- MQTT ---------------------------------------------------------------------------------

    def _client(self, proto: int) -> mqtt.Client:
        kwargs = {} if proto == mqtt.MQTTv5 else {"clean_session": not self.persistent}
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=proto, manual_ack=True,
                        **kwargs)
        c.max_inflight_messages_set(1000)
        if self.tls:
            c.tls_set()
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.reconnect_delay_set(0.2, 5)
        return c

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self._pool is None:
            self._process(client, msg)
        else:  # bounded: the broker sends at most its in-flight window of unacknowledged messages
            self._pool.submit(self._process, client, msg)

    def _process(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        # manual ack: a message is acknowledged only once it is stored (or refused for good)
        if self.handle(msg.topic, msg.payload) != "retry" and msg.qos > 0:
            client.ack(msg.mid, msg.qos)

    def _on_disconnect(self, *args: object) -> None:
        self._connected.clear()
        self._hung_up = True

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            self.counters["connect_refused"] += 1
            return
        sub = f"{ROOT}/#"
        if self.share_group:
            sub = f"$share/{self.share_group}/{sub}"
        client.subscribe(sub, qos=1)
        self.counters["connects"] += 1

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        if any(rc.is_failure for rc in reason_codes):
            log.error("ingest: subscription refused: %s", [str(rc) for rc in reason_codes])
            self.counters["subscribe_refused"] += 1
            return
        self._connected.set()  # subscribed (SUBACK): from now on nothing published is missed

    def run(self, idle_exit: float | None = None) -> dict:
        """Serve until stop() (or `idle_exit` seconds without a message); returns stats()."""
        self._recover()
        protos = [mqtt.MQTTv5] if self.protocol == "mqtt5" or self.share_group else (
            [mqtt.MQTTv311] if self.protocol == "mqtt311" else [mqtt.MQTTv5, mqtt.MQTTv311])
        client = None
        for proto in protos:
            client = self._client(proto)
            try:
                if proto == mqtt.MQTTv5:
                    props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
                    props.SessionExpiryInterval = 86400 if self.persistent else 0
                    client.connect(self.host, self.port, 30, clean_start=not self.persistent, properties=props)
                else:
                    client.connect(self.host, self.port, 30)
            except OSError as e:
                raise ConnectionError(f"ingest: cannot connect to {self.host}:{self.port}: {e}") from None
            self._hung_up = False
            client.loop_start()
            # a 3.1.1-only broker (amqtt) may hang on an MQTT 5 CONNECT instead of refusing it
            deadline = time.monotonic() + (2.0 if proto == mqtt.MQTTv5 and len(protos) > 1 else 10.0)
            while not self._connected.is_set() and time.monotonic() < deadline and not self._stop.is_set() \
                    and not self._hung_up:
                time.sleep(0.02)
            if self._connected.is_set():
                break
            client.disconnect()
            client.loop_stop()
        else:
            if self.share_group:
                raise ConnectionError(f"ingest: broker {self.host}:{self.port} refused MQTT 5, which shared "
                                      "subscriptions (--share-group) need")
            raise ConnectionError(f"ingest: broker {self.host}:{self.port} refused MQTT 5 and 3.1.1")
        # PNG encoding, depth decoding and file I/O release the GIL: a few workers use the cores
        # (messages arriving before the pool exists are simply processed inline)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ingest") if self.workers > 1 else None
        self.confirmer.start(client)
        self._last_message = time.monotonic()
        last_report = time.monotonic()
        try:
            while not self._stop.wait(0.2):
                now = time.monotonic()
                if idle_exit is not None and now - self._last_message >= idle_exit:
                    break
                if self._retry.is_set():
                    client = self._redeliver(client)
                if now - last_report >= self.report_every:
                    self.reassembler.expire()
                    self._finalize()
                    last_report = now
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)  # finish (and ack) what was received
            self.confirmer.stop()  # the last confirmations go out before the link closes
            client.disconnect()
            client.loop_stop()
            self._finalize()
        return self.stats()

    def _finalize(self) -> None:
        """Regenerate dirty sessions' text files and reports; a failure is counted, never fatal
        (what is committed in frames.jsonl is untouched by it)."""
        try:
            self.sink.finalize_all(only_dirty=True)
        except Exception:  # noqa: BLE001 - the ingest must keep storing frames
            log.exception("ingest: writing session files/report failed")
            with self._lock:
                self.counters["finalize_errors"] += 1

    def _redeliver(self, client: mqtt.Client) -> mqtt.Client:
        """After a storage error: wait a little, then reconnect so the broker resends what we did not
        acknowledge (it redelivers unacknowledged QoS 1 messages when the session resumes)."""
        if self._stop.wait(self.retry_delay):
            return client
        self._retry.clear()
        with self._lock:
            self.counters["redelivery_reconnects"] += 1
        client.disconnect()
        client.loop_stop()
        self._connected.clear()
        try:
            client.reconnect()
        except OSError as e:
            log.warning("ingest: reconnect failed (%s); paho keeps trying", e)
        client.loop_start()
        return client

    def stop(self) -> None:
        self._stop.set()

    @property
    def connected(self) -> bool:
        """True while connected and subscribed (wait for this before starting devices in a demo)."""
        return self._connected.is_set()

    def stats(self) -> dict:
        with self._lock:
            return {"connected": self._connected.is_set(), **dict(self.counters),
                    "confirm": dict(self.confirmer.counters),
                    "rejected": dict(self.rejected), "rejected_total": sum(self.rejected.values()),
                    "reassembly": dict(self.reassembler.counters), "partials": self.reassembler.partials(),
                    "sessions": [str(s.root.relative_to(self.out)) for s in self.sink.sessions()]}


def _worth_logging(n: int) -> bool:
    """The first few occurrences of a repeating error, then every 1000th."""
    return n <= 3 or n % 1000 == 0


def _source_of(folder: Path) -> str:
    """The device id a claimed partial folder came from (hex-encoded in its name)."""
    name = folder.name[len(".assembling-"):]
    try:
        return bytes.fromhex(name.split("-", 1)[0]).decode()
    except (ValueError, UnicodeDecodeError):
        return ""
