"""The ingest's end-to-end acknowledgments: tell each device which of its records are durable here.

    conf = Confirmer(sink)                          # one per Ingest
    conf.start(publish)                             # publish(topic, payload): QoS 1 on the ingest's link
    conf.stored(device_id, message_id, msg, what)   # after Sink.write returned (stored or duplicate)
    conf.rejected(device_id, message_id, reason)    # a complete message the backend will never accept
    conf.stop()                                     # last flush

Every `interval` seconds (at most that many acks per second per device) the confirmer takes what was
stored since the last round, makes the files that hold it (the frame's JPEG and PNG, the cloud's PLY,
the commit log line in frames.jsonl / events.jsonl / telemetry.jsonl) and the directories that name
them durable — one syncfs(2) of the output filesystem per round on Linux (one journal commit for the
whole batch), else an fsync per file and directory — and only then publishes, per device and spool, one ack on `crowdcap/v1/<device_id>/ack` (QoS 1):

    {"v": 1, "spool": "<16 hex: message id bytes 0-7>", "ranges": [[first, last], ...],
     "rejected": [[record_id, "reason"], ...]}

(docs/wire-format.md, "End-to-end acknowledgment"). Duplicates are acked again (a lost ack heals on
the device's resend), but only once the copy that claimed the seq has committed: a duplicate is held
for one round and dropped if the claim was released meanwhile (the first copy failed to store).
If an fsync fails (disk full, I/O error) nothing of that round is acked: the device resends it.
Forged messages are never acked or rejected (the real device must keep resending its own).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from uplink import wire
from uplink.backend.sink import _JSON_LOGS, Sink, safe_ident

log = logging.getLogger(__name__)

ROOT = "crowdcap/v1"
# reasons a message is refused for that say nothing about the real device's record (never rejected)
_NOT_OURS = ("sig", "forg", "unknown_device", "unsigned", "topic_mismatch")


@dataclass
class _Pending:
    ids: set[int] = field(default_factory=set)
    rejected: dict[int, str] = field(default_factory=dict)


def paths_of(sink: Sink, msg: wire.Message) -> tuple[list[Path], Path] | None:
    """(files that hold `msg` once stored, its session folder), or None for what is not spooled."""
    root = sink.out / safe_ident(msg.device_id) / safe_ident(msg.session_id)
    name = f"{msg.seq:08d}"
    if msg.type == wire.FRAME:
        return [root / "rgb" / f"{name}.jpg", root / "depth" / f"{name}.png", root / "frames.jsonl",
                root / "camera.json"], root
    if msg.type == wire.CLOUD:
        return [root / "clouds" / f"{name}.ply"], root
    if msg.type in _JSON_LOGS:
        return [root / _JSON_LOGS[msg.type][1]], root
    return None  # status: latest value, sent directly by the device, not a spool record


def _letter(msg: wire.Message) -> str:
    return "f" if msg.type == wire.FRAME else "c" if msg.type == wire.CLOUD else _JSON_LOGS[msg.type][0]


def ranges_of(ids: set[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in sorted(ids):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


class Confirmer:
    def __init__(self, sink: Sink, interval: float = 0.2, fsync: bool = True) -> None:
        self.sink = sink
        self.interval = interval
        self.fsync = fsync
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._files: set[Path] = set()
        self._dirs: set[Path] = set()
        self._dups: list[tuple[float, str, str, bytes, wire.Message]] = []  # (t, device, spool, mid, msg)
        self._confirmed: OrderedDict[tuple[str, bytes], None] = OrderedDict()  # recently confirmed (device, id)
        self._publish: Callable[[str, bytes], object] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- called by the ingest's workers ---------------------------------------------------------

    def stored(self, device_id: str, message_id: bytes, msg: wire.Message, what: str) -> None:
        got = paths_of(self.sink, msg)
        if got is None or len(message_id) != 16:
            return
        files, root = got
        key = (device_id, message_id[:8].hex())
        rid = int.from_bytes(message_id[8:], "big")
        with self._lock:
            if what == "duplicate":
                self._dups.append((time.monotonic(), key[0], key[1], message_id, msg))
            else:
                self._pending.setdefault(key, _Pending()).ids.add(rid)
            self._files.update(files)
            self._dirs.update({f.parent for f in files} | {root, root.parent, self.sink.out})
        self._wake.set()

    def chunk_of_confirmed(self, device_id: str, message_id: bytes) -> None:
        """A chunk the reassembler dropped as a late duplicate: if its message was confirmed (it is
        durable), confirm it again — the device resends because our earlier ack was lost."""
        with self._lock:
            if (device_id, message_id) not in self._confirmed or len(message_id) != 16:
                return
            self._pending.setdefault((device_id, message_id[:8].hex()), _Pending()).ids.add(
                int.from_bytes(message_id[8:], "big"))
            self.counters["late_chunks_reacked"] += 1
        self._wake.set()

    def rejected(self, device_id: str, message_id: bytes, reason: str) -> None:
        if len(message_id) != 16 or any(k in reason for k in _NOT_OURS):
            return
        try:
            safe_ident(device_id)
        except wire.WireError:
            return
        with self._lock:
            p = self._pending.setdefault((device_id, message_id[:8].hex()), _Pending())
            p.rejected[int.from_bytes(message_id[8:], "big")] = reason
        self._wake.set()

    # ---- the confirming thread ------------------------------------------------------------------

    def start(self, publish: Callable[[str, bytes], object]) -> None:
        self._publish = publish
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ingest-confirm", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.flush(final=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            if self._stop.is_set():
                return
            self._wake.clear()
            t0 = time.monotonic()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the ingest must keep running; the device resends
                log.exception("ingest: confirming failed")
                self.counters["confirm_errors"] += 1
            if self._dups:
                self._wake.set()  # held duplicates are due next round
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def _take_due_duplicates(self, final: bool) -> None:
        """Move duplicates older than one round whose first copy is committed into the pending acks."""
        now = time.monotonic()
        keep = []
        for item in self._dups:
            t, dev, spool, mid, msg = item
            if not final and now - t < self.interval:
                keep.append(item)
                continue
            session = self.sink.session(msg.device_id, msg.session_id)
            with self.sink._lock:
                standing = session.committed(_letter(msg), msg.seq)
            if standing:
                self._pending.setdefault((dev, spool), _Pending()).ids.add(int.from_bytes(mid[8:], "big"))
                self.counters["duplicates_reacked"] += 1
        self._dups = keep

    def flush(self, final: bool = False) -> int:
        """fsync what was stored, then publish the acks; the number of ack messages published."""
        with self._lock:
            self._take_due_duplicates(final)
            pending, self._pending = self._pending, {}
            files, self._files = self._files, set()
            dirs, self._dirs = self._dirs, set()
        if not pending:
            return 0
        if self.fsync:
            try:
                t0 = time.perf_counter()
                if _syncfs is not None and len(files) > 2:
                    # one syncfs covers every file and directory of the batch (one journal commit
                    # instead of one per file): what makes confirmation keep up at 30 fps
                    _sync_filesystem(self.sink.out)
                    self.counters["syncfs"] += 1
                else:
                    for path in sorted(files):
                        _fsync_path(path, os.O_RDONLY)
                    for path in sorted(dirs, key=lambda p: -len(p.parts)):  # deepest first
                        _fsync_path(path, os.O_RDONLY | os.O_DIRECTORY)
                    self.counters["fsync_files"] += len(files)
                self.counters["sync_ms_total"] += round((time.perf_counter() - t0) * 1000)
            except OSError as e:
                self.counters["fsync_errors"] += 1
                if self.counters["fsync_errors"] <= 3 or self.counters["fsync_errors"] % 1000 == 0:
                    log.error("ingest: fsync failed, not confirming this round (devices resend): %s", e)
                # what was rejected needs no durability: keep only that
                pending = {k: _Pending(rejected=p.rejected) for k, p in pending.items() if p.rejected}
        sent = 0
        for (device, spool), p in pending.items():
            if not p.ids and not p.rejected:
                continue
            body = {"v": 1, "spool": spool, "ranges": ranges_of(p.ids),
                    "rejected": [[rid, reason] for rid, reason in sorted(p.rejected.items())]}
            if self._publish is None:
                self.counters["acks_unsent_no_client"] += 1
                continue
            self._publish(f"{ROOT}/{device}/ack", json.dumps(body, separators=(",", ":")).encode())
            with self._lock:
                for rid in p.ids:
                    self._confirmed[(device, bytes.fromhex(spool) + rid.to_bytes(8, "big"))] = None
                while len(self._confirmed) > 100_000:
                    self._confirmed.popitem(last=False)
            sent += 1
            self.counters["acks_sent"] += 1
            self.counters["records_confirmed"] += len(p.ids)
            self.counters["records_rejected"] += len(p.rejected)
        return sent


def _load_syncfs():  # noqa: ANN202
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


def _sync_filesystem(path: Path) -> None:
    """syncfs(2) on the filesystem holding `path`: all its dirty data and metadata reach the disk."""
    import ctypes

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _fsync_path(path: Path, flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return  # camera.json of a session that never had one, a log not yet created
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
