"""Take-backs in the spool: re-redact or drop records the wearer took back before they leave.

A mixin of `uplink.spool.Spool` (like `uplink.spool_recovery`), using its lock, records and segments
directly. Called by the uplink stage for `privacy take-back` (device/privacy_console.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from uplink.spool_recovery import Record


class TakeBacks:

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
