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
import threading
import time
from collections import Counter
from pathlib import Path

from uplink import spool_format as fmt
from uplink.spool_recovery import Record, Recovery, _Segment  # noqa: F401 - Record is part of the API
from uplink.spool_takeback import TakeBacks

log = logging.getLogger(__name__)

PRIO_TELEMETRY, PRIO_FRAME, PRIO_KEYFRAME, PRIO_CLOUD, PRIO_CONTROL = 0, 1, 2, 3, 4
PRIO_NAMES = {PRIO_TELEMETRY: "telemetry", PRIO_FRAME: "frame", PRIO_KEYFRAME: "keyframe", PRIO_CLOUD: "cloud",
              PRIO_CONTROL: "control"}
FLAG_RETAIN = 0x01

class SpoolError(Exception):
    pass


class Spool(Recovery, TakeBacks):
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

    def urgent_after(self, cursor: int, min_priority: int, limit: int = 16) -> list[int]:
        """Live ids > cursor of at least `min_priority`, oldest first (control messages that may pass
        frames waiting for the end-to-end window)."""
        with self._lock:
            return sorted(r.id for r in self._records.values() if r.id > cursor and r.priority >= min_priority)[:limit]

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
                        done.append(rid)
            by_segment: dict[int, list[int]] = {}
            for rid in done:
                by_segment.setdefault(self._records[rid].segment, []).append(rid)
            for number, rids in by_segment.items():  # one write per segment's ack log, not one per record
                os.write(self._segments[number].ack_fd, b"".join(fmt.ack_entry(r, 0) for r in rids))
                for rid in rids:
                    self._inflight.discard(rid)
                    self._drop(rid, reason=0, logged=True)
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

    def _drop(self, rid: int, reason: int, logged: bool = False) -> None:
        self._uncache(rid)
        r = self._records.pop(rid)
        seg = self._segments[r.segment]
        if not logged:
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
