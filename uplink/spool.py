"""Crash-safe store-and-forward: append-only CRC-framed segment files with a byte quota.

    spool = Spool(dir, quota_bytes=..., fsync="always"|"interval"|"off")
    rid = spool.append(message_bytes, priority=PRIO_FRAME, kind=wire.FRAME)   # durable per fsync policy
    for rid in spool.pending_after(cursor, n): data, rec = spool.read(rid)   # oldest first
    spool.ack(rid)                                                           # after every chunk's PUBACK

Record on disk: header (magic, length, id, priority, kind, flags, CRC32C of header+payload) + payload.
A record leaves only by `ack` or by eviction; both are written to the segment's `.ack` sidecar (an
append-only list of CRC-framed ids), so a restart knows what is gone. A lost ack (crash before it hit
the disk) means the record is sent again: the ingest dedupes. A segment file is deleted when none of
its records is live and it is not the active one (also at rotation): after a healthy run the spool
holds at most one segment. Recovery drops a torn tail (after the last valid record) and resyncs past a
corrupt record on the next valid record header; the records lost in between are counted
(`evictions["corrupt"]`) and written to the ack log (reason 2) so a restart does not count them again.

The budget for live record bytes is the smaller of the quota and what the filesystem can still hold:
(spool files + statvfs free − `reserve_bytes` − two segments) / 1.5 (room for dead bytes before
compaction). When an append does not fit, records of lower or equal priority are evicted, lowest
priority first, oldest first (never one in flight); if that is not enough the new record itself is
refused. Every eviction is counted by reason (`quota_<prio>`, or `disk_<prio>` when the filesystem was
the limit). Segments with many dead records are compacted (live records copied forward with their ids).
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from uplink import spool_format as fmt

log = logging.getLogger(__name__)

PRIO_TELEMETRY, PRIO_FRAME, PRIO_KEYFRAME, PRIO_CLOUD, PRIO_CONTROL = 0, 1, 2, 3, 4
PRIO_NAMES = {PRIO_TELEMETRY: "telemetry", PRIO_FRAME: "frame", PRIO_KEYFRAME: "keyframe", PRIO_CLOUD: "cloud",
              PRIO_CONTROL: "control"}
FLAG_RETAIN = 0x01

_SEG = re.compile(r"^seg-(\d{12})\.log$")


class SpoolError(Exception):
    pass


@dataclass
class Record:
    id: int
    priority: int
    kind: int
    flags: int
    size: int  # payload bytes
    segment: int
    offset: int  # of the payload within the segment file
    t_added: float  # monotonic seconds (recovered records: time of recovery)
    recovered: bool = False


class _Segment:
    def __init__(self, number: int, path: Path, fd: int, size: int) -> None:
        self.number, self.path, self.fd, self.size = number, path, fd, size
        self.live = 0
        self.live_bytes = 0
        self.ack_fd = -1

    @property
    def ack_path(self) -> Path:
        return self.path.with_suffix(".ack")


class Spool:
    def __init__(self, directory: str | os.PathLike, quota_bytes: int = 1 << 30, fsync: str = "interval",
                 fsync_interval_ms: float = 200.0, segment_bytes: int | None = None,
                 reserve_bytes: int = 0) -> None:
        if fsync not in ("always", "interval", "off"):
            raise ValueError(f"fsync: expected always, interval or off, got {fsync!r}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.quota = int(quota_bytes)
        self.reserve = int(reserve_bytes)  # free space the spool leaves on its filesystem
        self.fsync = fsync
        self.fsync_interval = fsync_interval_ms / 1000.0
        self.segment_bytes = segment_bytes or max(1 << 20, min(64 << 20, self.quota // 16))
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}
        self._records: dict[int, Record] = {}
        self._ids: list[int] = []  # ascending; may hold dead ids (skipped, pruned lazily)
        self._inflight: set[int] = set()
        # Recently appended payloads by id (bounded): the sender normally reads a record moments after
        # it was appended, so it gets the same bytes object instead of a read back from the file.
        self._cache: dict[int, bytes] = {}
        self._cache_bytes = 0
        self.cache_limit = min(64 << 20, self.quota // 4)
        self._next_id = 1
        self._active: _Segment | None = None
        self._last_sync = time.monotonic()
        self._dirty = False
        self.live_bytes = 0
        self.evictions: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.epoch = self._load_epoch()
        t0 = time.monotonic()
        self._recover()
        self.recovery_seconds = time.monotonic() - t0

    # ---- recovery -----------------------------------------------------------------------------

    def _load_epoch(self) -> bytes:
        """8 random bytes naming this spool: with a record id, a message id unique across devices."""
        path = self.dir / "spool.id"
        try:
            data = path.read_bytes()
            if len(data) == 8:
                return data
        except FileNotFoundError:
            pass
        data = os.urandom(8)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return data

    def _recover(self) -> None:
        gone: set[int] = set()
        try:
            self._next_id = max(1, int((self.dir / "next_id").read_text()))
        except (FileNotFoundError, ValueError):
            pass
        numbers = sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _SEG.match(p.name)))
        for n in numbers:
            gone |= fmt.read_acks(self._seg_path(n).with_suffix(".ack"))
        # An acked record whose bytes were lost (torn tail) must not get its id reused: the old ack
        # would make the new record look delivered, and the ingest would take it for a duplicate.
        self._next_id = max(self._next_id, max(gone, default=0) + 1)
        suspects: dict[int, set[int]] = {}  # segment -> ids that may sit in a corrupt span
        for n in numbers:
            path = self._seg_path(n)
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
            size = os.fstat(fd).st_size
            seg = _Segment(n, path, fd, size)
            self._segments[n] = seg
            valid_end = self._scan(seg, gone, suspects.setdefault(n, set()))
            if valid_end < size:
                self.counters["torn_bytes_dropped"] += size - valid_end
                os.ftruncate(fd, valid_end)
                seg.size = valid_end
                log.warning("spool: dropped %d bytes of torn/corrupt tail in %s", size - valid_end, path.name)
        for seg in list(self._segments.values()):
            seg.ack_fd = os.open(seg.ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            lost = sorted(i for i in suspects.get(seg.number, ()) if i not in self._records and i not in gone)
            # (a negative id stands for a damaged record whose id cannot be told)
            if lost:  # counted once: the ack log remembers them (reason 2) for the next recovery
                os.write(seg.ack_fd, b"".join(fmt.ack_entry(i, 2) for i in lost if i > 0))
                self.evictions["corrupt"] += len(lost)
                self.counters["records_lost_corrupt"] += len(lost)
                log.warning("spool: %d record(s) lost to corruption in %s (resynced after it)", len(lost),
                            seg.path.name)
            if seg.live == 0:
                self._delete_segment(seg)
        self._ids = sorted(self._records)
        self.counters["recovered_records"] = len(self._records)

    def _scan(self, seg: _Segment, gone: set[int], suspects: set[int]) -> int:
        found, valid_end, holes = fmt.scan(seg.path)
        now = time.monotonic()
        for rid, prio, kind, flags, length, offset in found:
            self._next_id = max(self._next_id, rid + 1)
            if rid not in gone and rid not in self._records:  # a compaction copy may exist twice
                self._records[rid] = Record(rid, prio, kind, flags, length, seg.number, offset, now, recovered=True)
                seg.live += 1
                seg.live_bytes += length
                self.live_bytes += length
        for start, end in holes:
            # ids are ascending within a segment: the ones between the neighbours of a hole were in it
            before = [r[0] for r in found if r[5] < start]
            after = [r[0] for r in found if r[5] >= end]
            lo, hi = (before[-1] if before else (after[0] - 1 if after else 0)), (after[0] if after else 0)
            ids = set(range(lo + 1, hi))
            if not ids:  # cannot tell which: count the damaged span as one record
                ids = {-(seg.number * 1_000_000 + start)}
            suspects |= ids
            self.counters["corrupt_bytes_skipped"] += end - start
        return valid_end

    # ---- writing ------------------------------------------------------------------------------

    def _seg_path(self, n: int) -> Path:
        return self.dir / f"seg-{n:012d}.log"

    def _open_segment(self) -> _Segment:
        n = max(self._segments, default=0) + 1
        path = self._seg_path(n)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        seg = _Segment(n, path, fd, 0)
        seg.ack_fd = os.open(seg.ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._segments[n] = seg
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the new file's directory entry must survive a power cut too
        finally:
            os.close(dfd)
        return seg

    def append(self, payload: bytes, priority: int, kind: int, flags: int = 0) -> int | None:
        """Store one record; its id, or None if the quota refused it (counted)."""
        size = len(payload)
        if size > fmt.MAX_RECORD:
            raise SpoolError(f"record of {size} bytes exceeds the {fmt.MAX_RECORD} byte limit")
        with self._lock:
            if not self._make_room(size, priority):
                why = self._live_limit()[1]
                self.evictions[f"{why}_refused_{PRIO_NAMES.get(priority, priority)}"] += 1
                return None
            rid = self._next_id
            self._next_id += 1
            self._write(rid, payload, priority, kind, flags, time.monotonic(), recovered=False)
            self._ids.append(rid)
            if size <= self.cache_limit:
                self._cache[rid] = payload
                self._cache_bytes += size
                while self._cache_bytes > self.cache_limit:
                    self._uncache(next(iter(self._cache)))
            self._maybe_sync()
            try:
                self._maybe_compact()
            except (OSError, SpoolError):  # the record is stored; compaction is retried next append
                self.counters["compaction_errors"] += 1
            self.counters["appended"] += 1
            self.counters["appended_bytes"] += size
            return rid

    def _write(self, rid: int, payload: bytes, priority: int, kind: int, flags: int, t_added: float,
               recovered: bool) -> None:
        seg = self._active
        if seg is None or seg.size >= self.segment_bytes:
            old = seg
            seg = self._active = self._open_segment()
            if old is not None and old.live == 0 and old.number in self._segments:
                self._delete_segment(old)  # rotated away with nothing live: no reason to keep it
        parts = fmt.record_parts(rid, priority, kind, flags, payload)
        try:
            written = os.writev(seg.fd, parts)
        except OSError:
            self._cut_torn(seg)
            raise
        if written != sum(len(p) for p in parts):  # disk full
            self._cut_torn(seg)
            raise SpoolError(f"short write to {seg.path} ({written} bytes)")
        self._records[rid] = Record(rid, priority, kind, flags, len(payload), seg.number, seg.size + fmt.RECORD.size,
                                    t_added, recovered)
        seg.size += written
        seg.live += 1
        seg.live_bytes += len(payload)
        self.live_bytes += len(payload)
        self._dirty = True

    def _cut_torn(self, seg: _Segment) -> None:
        """Remove a partly written record: records appended after it would sit at offsets the index
        does not know, and recovery would drop them with the torn record."""
        try:
            os.ftruncate(seg.fd, seg.size)
        except OSError:
            if seg is self._active:
                self._active = None  # append nothing more behind the torn record
        self.counters["write_errors"] += 1

    def _maybe_sync(self) -> None:
        # "interval": the sender thread calls sync() every interval off the hot path; the append
        # path only steps in when that has not happened for two intervals (no sender, or stalled).
        if self.fsync == "always" or (self.fsync == "interval"
                                      and time.monotonic() - self._last_sync >= 2 * self.fsync_interval):
            self._sync_locked()

    def _sync_locked(self) -> None:
        if self._dirty and self._active is not None:
            os.fdatasync(self._active.fd)
            self.counters["fsyncs"] += 1
        self._dirty = False
        self._last_sync = time.monotonic()

    def sync(self) -> None:
        """Flush appended records to disk now (the sender calls this every fsync interval).

        The fdatasync runs outside the lock on a dup of the fd, so appends and acks go on meanwhile."""
        with self._lock:
            if not self._dirty or self._active is None:
                return
            fd = os.dup(self._active.fd)
            self._dirty = False
            self._last_sync = time.monotonic()
        try:
            os.fdatasync(fd)
            self.counters["fsyncs"] += 1
        finally:
            os.close(fd)

    def disk_bytes(self) -> int:
        return sum(s.size for s in self._segments.values())

    def _live_limit(self) -> tuple[int, str]:
        """(live-byte budget, eviction reason prefix): the quota, or less when the filesystem is short."""
        try:
            st = os.statvfs(self.dir)
        except OSError:
            return self.quota, "quota"
        room = self.disk_bytes() + st.f_bavail * st.f_frsize - self.reserve - 2 * self.segment_bytes
        disk = int(room / 1.5)
        return (disk, "disk") if disk < self.quota else (self.quota, "quota")

    def _make_room(self, size: int, priority: int) -> bool:
        limit, why = self._live_limit()
        if self.live_bytes + size <= limit:
            return True
        victims: list[Record] = []
        need = self.live_bytes + size - limit
        for prio in sorted(p for p in {r.priority for r in self._records.values()} if p <= priority):
            for rid in self._ids:
                r = self._records.get(rid)
                if r is None or r.priority != prio or rid in self._inflight:
                    continue
                victims.append(r)
                need -= r.size
                if need <= 0:
                    break
            if need <= 0:
                break
        if need > 0:
            return False
        for r in victims:
            self.evictions[f"{why}_{PRIO_NAMES.get(r.priority, r.priority)}"] += 1
            self._drop(r.id, reason=1)
        return True

    # ---- reading and acking -------------------------------------------------------------------

    def pending_after(self, cursor: int, limit: int) -> list[int]:
        """Up to `limit` live record ids greater than `cursor`, oldest first."""
        with self._lock:
            if len(self._ids) > 2 * len(self._records) + 64:
                self._ids = [i for i in self._ids if i in self._records]
            out = []
            for i in range(bisect.bisect_right(self._ids, cursor), len(self._ids)):
                rid = self._ids[i]
                if rid in self._records:
                    out.append(rid)
                    if len(out) >= limit:
                        break
            return out

    def read(self, rid: int) -> tuple[bytes, Record] | None:
        """The payload and record of a live id (marked in flight: eviction skips it), or None if gone."""
        with self._lock:
            r = self._records.get(rid)
            if r is None:
                return None
            data = self._cache.get(rid)
            if data is None:
                data = os.pread(self._segments[r.segment].fd, r.size, r.offset)
            self._inflight.add(rid)
            return data, r

    def release(self, rid: int) -> None:
        """Not sent after all (link dropped): the record stays pending and becomes evictable again."""
        with self._lock:
            self._inflight.discard(rid)

    def ack(self, rid: int) -> None:
        """Delivered (every chunk PUBACKed): the record leaves the spool."""
        with self._lock:
            self._inflight.discard(rid)
            if rid in self._records:
                self._drop(rid, reason=0)
                self.counters["acked"] += 1

    def confirm(self, ranges: list[tuple[int, int]]) -> list[int]:
        """The backend made these inclusive id ranges durable: the live ones leave the spool (written
        to the ack log, so a restart neither loses nor resends them). Returns the ids that left."""
        done: list[int] = []
        with self._lock:
            for first, last in ranges:
                i = bisect.bisect_left(self._ids, first)
                while i < len(self._ids) and self._ids[i] <= last:
                    rid = self._ids[i]
                    i += 1
                    if rid in self._records:
                        self._inflight.discard(rid)
                        self._drop(rid, reason=0)
                        done.append(rid)
            self.counters["confirmed"] += len(done)
        return done

    def reject(self, rid: int, reason: str) -> bool:
        """The backend will never accept this record: it leaves, counted as `rejected_<reason>`."""
        with self._lock:
            self._inflight.discard(rid)
            if rid not in self._records:
                return False
            self.evictions[f"rejected_{reason}"] += 1
            self._drop(rid, reason=1)
            return True

    def _uncache(self, rid: int) -> None:
        data = self._cache.pop(rid, None)
        if data is not None:
            self._cache_bytes -= len(data)

    def _drop(self, rid: int, reason: int) -> None:
        self._uncache(rid)
        r = self._records.pop(rid)
        seg = self._segments[r.segment]
        os.write(seg.ack_fd, fmt.ack_entry(rid, reason))
        seg.live -= 1
        seg.live_bytes -= r.size
        self.live_bytes -= r.size
        if seg.live == 0 and seg is not self._active:
            self._delete_segment(seg)

    def _delete_segment(self, seg: _Segment) -> None:
        os.close(seg.fd)
        if seg.ack_fd >= 0:
            os.close(seg.ack_fd)
        for p in (seg.path, seg.ack_path):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        del self._segments[seg.number]
        if seg is self._active:
            self._active = None
        # Ids must never repeat, even once every segment is gone: keep the high-water mark.
        mark = self.dir / "next_id"
        mark.with_suffix(".tmp").write_text(str(self._next_id))
        os.replace(mark.with_suffix(".tmp"), mark)

    def _maybe_compact(self) -> None:
        disk = self.disk_bytes()
        if disk <= min(self.quota, self._live_limit()[0]) * 1.5 + self.segment_bytes:
            return
        old = [s for s in self._segments.values() if s is not self._active]
        if not old:
            return
        seg = min(old, key=lambda s: s.live_bytes / max(1, s.size))
        moving = [r for r in self._records.values() if r.segment == seg.number]
        for r in moving:
            data = os.pread(seg.fd, r.size, r.offset)
            self._write(r.id, data, r.priority, r.kind, r.flags, r.t_added, r.recovered)  # re-points r
            seg.live -= 1
            seg.live_bytes -= r.size
            self.live_bytes -= r.size
        self._sync_locked()  # the copies are durable before the originals go
        self._delete_segment(seg)
        self.counters["compactions"] += 1

    # ---- take-backs (the wearer changed their mind: device/privacy_console.py) ------------------

    def rewrite(self, kinds: set[int], since: float,
                transform: Callable[[bytes, Record], bytes | None]) -> dict[str, int]:
        """Re-redact or drop live records of `kinds` appended since `since` (monotonic) before they
        leave. `transform(payload, record)` returns new bytes (stored under a new id, the old record
        dropped), None (dropped, ack log reason 3) or the same object (kept). It runs outside the lock
        (JPEG work); a record read by the sender meanwhile (in flight) is left alone and counted — the
        backend's take-back message covers it. Returns counts."""
        with self._lock:
            chosen = [r for r in self._records.values() if r.kind in kinds and r.t_added >= since]
        counts = {"rewritten": 0, "dropped": 0, "kept": 0, "in_flight": 0}
        for rec in sorted(chosen, key=lambda r: r.id):
            with self._lock:
                if rec.id not in self._records or rec.id in self._inflight:
                    counts["in_flight" if rec.id in self._inflight else "kept"] += 1
                    continue
                data = self._cache.get(rec.id) or os.pread(self._segments[rec.segment].fd, rec.size, rec.offset)
            new = transform(data, rec)
            if new is data:
                counts["kept"] += 1
                continue
            with self._lock:
                if rec.id not in self._records or rec.id in self._inflight:  # sent meanwhile
                    counts["in_flight"] += 1
                    continue
                if new is not None:
                    rid = self._next_id
                    self._next_id += 1
                    self._write(rid, new, rec.priority, rec.kind, rec.flags, rec.t_added, rec.recovered)
                    self._ids.append(rid)
                self._drop(rec.id, reason=3)
                self._sync_locked()  # the take-back is durable before the command says it is done
                key = "rewritten" if new is not None else "dropped"
                counts[key] += 1
                self.counters[f"taken_back_{key}"] += 1
        return counts

    # ---- state --------------------------------------------------------------------------------

    def record(self, rid: int) -> Record | None:
        with self._lock:
            return self._records.get(rid)

    def __len__(self) -> int:
        return len(self._records)

    def stats(self) -> dict:
        with self._lock:
            oldest = min((r.t_added for r in self._records.values()), default=None)
            return {
                "records": len(self._records), "bytes": self.live_bytes,
                "disk_bytes": self.disk_bytes(), "segments": len(self._segments),
                "quota_bytes": self.quota,
                "oldest_unsent_age_s": 0.0 if oldest is None else round(time.monotonic() - oldest, 3),
                "evictions": dict(self.evictions), "evicted_total": sum(self.evictions.values()),
                **dict(self.counters),
            }

    def close(self) -> None:
        with self._lock:
            if self.fsync != "off":
                self._sync_locked()
            for seg in list(self._segments.values()):
                os.close(seg.fd)
                if seg.ack_fd >= 0:
                    os.close(seg.ack_fd)
            self._segments.clear()
            self._records.clear()
            self._active = None
