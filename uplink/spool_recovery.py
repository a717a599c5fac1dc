"""The spool's recovery at open: epoch, ack logs, segment scan with resync past corruption.

A mixin of `uplink.spool.Spool` (split out to keep that module readable); it reads and sets the
spool's own state (`_segments`, `_records`, `_next_id`, counters) exactly as `Spool` does.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from uplink import spool_format as fmt

log = logging.getLogger("uplink.spool")

_SEG = re.compile(r"^seg-(\d{12})\.log$")


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


class Recovery:
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

