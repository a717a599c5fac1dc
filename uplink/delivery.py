"""End-to-end delivery on the device: which spool records the ingest has confirmed, and what to resend.

    track = Confirmations(spool, timeout=10.0, window_bytes=64 << 20)
    track.sent(rid, size)                 # every chunk PUBACKed: the broker has it, the ingest may not
    track.may_send_more()                 # False while `window_bytes` are sent but unconfirmed
    for rid in track.due(): resend(rid)   # broker-acknowledged, unconfirmed after timeout × 2^attempts
    done, rejected = track.on_ack(payload)  # crowdcap/v1/<device>/ack (docs/wire-format.md)

A PUBACK is hop-by-hop: it only frees the sender's in-flight window. A record leaves the spool when an
ack names it (`Spool.confirm`, written to the ack log: restart-safe) or rejects it (`Spool.reject`,
counted as `rejected_<reason>`). A record the broker acknowledged but nobody confirmed within
`timeout` is sent again under the same message id (the ingest dedupes and re-acks), with exponential
backoff up to 8 × timeout, counted as `resent_unconfirmed`.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, deque
from dataclasses import dataclass

from uplink.spool import Spool

_REASON = re.compile(r"[^A-Za-z0-9_]+")
MAX_BACKOFF = 8


@dataclass
class _Sent:
    t_first: float
    t_last: float
    size: int
    attempts: int = 1


class Confirmations:
    def __init__(self, spool: Spool, timeout: float, window_bytes: int) -> None:
        self.spool = spool
        self.timeout = timeout
        self.window_bytes = window_bytes
        self.epoch_hex = spool.epoch.hex()
        self._sent: dict[int, _Sent] = {}
        self._bytes = 0
        self.counters: Counter[str] = Counter()
        self.latencies: deque[float] = deque(maxlen=2048)  # seconds from first send to confirmation
        self.last_confirm: float | None = None  # monotonic
        self.last_ack_error = ""

    # ---- the sender's side --------------------------------------------------------------------

    def sent(self, rid: int, size: int) -> None:
        now = time.monotonic()
        s = self._sent.get(rid)
        if s is None:
            self._sent[rid] = _Sent(now, now, size)
            self._bytes += size
        else:
            s.t_last = now

    def is_sent(self, rid: int) -> bool:
        return rid in self._sent

    def sent_ids(self) -> list[int]:
        return list(self._sent)

    def may_send_more(self) -> bool:
        return self._bytes < self.window_bytes

    def due(self, now: float | None = None) -> list[int]:
        """Records whose confirmation is overdue (oldest first); counted as resent_unconfirmed."""
        now = time.monotonic() if now is None else now
        out = [rid for rid, s in self._sent.items()
               if now - s.t_last >= self.timeout * min(MAX_BACKOFF, 2 ** (s.attempts - 1))]
        for rid in out:  # the next deadline counts from now, with the next backoff step
            s = self._sent[rid]
            s.t_last = now
            s.attempts += 1
        self.counters["resent_unconfirmed"] += len(out)
        return sorted(out)

    def forget_all(self) -> None:
        """The link dropped: everything in the spool is replayed from its start anyway."""
        self._sent.clear()
        self._bytes = 0

    def _forget(self, rid: int, now: float) -> None:
        s = self._sent.pop(rid, None)
        if s is not None:
            self._bytes -= s.size
            self.latencies.append(now - s.t_first)

    # ---- acks from the backend ----------------------------------------------------------------

    def on_ack(self, payload: bytes) -> tuple[list[int], list[int]]:
        """Apply one ack message; (confirmed ids, rejected ids). A malformed ack is counted, never fatal."""
        try:
            ack = json.loads(payload)
            if not isinstance(ack, dict) or ack.get("v") != 1:
                raise ValueError(f"unsupported ack version {ack.get('v') if isinstance(ack, dict) else ack!r}")
            if ack.get("spool") != self.epoch_hex:
                self.counters["acks_other_spool"] += 1  # an old spool of this device, or a replayed ack
                return [], []
            ranges = [(int(a), int(b)) for a, b in ack.get("ranges") or []]
            rejected = [(int(r), str(reason)) for r, reason in ack.get("rejected") or []]
        except (ValueError, TypeError) as e:
            self.counters["acks_malformed"] += 1
            self.last_ack_error = f"malformed ack: {e}"
            return [], []
        now = time.monotonic()
        self.counters["acks_received"] += 1
        done = self.spool.confirm(ranges)
        for rid in done:
            self._forget(rid, now)
        gone = []
        for rid, reason in rejected:
            if self.spool.reject(rid, _REASON.sub("_", reason)[:40] or "unknown"):
                gone.append(rid)
            self._sent.pop(rid, None)
        self.counters["records_confirmed"] += len(done)
        self.counters["records_rejected"] += len(gone)
        if done:
            self.last_confirm = now
        return done, gone

    # ---- state ----------------------------------------------------------------------------------

    def unconfirmed(self) -> int:
        return len(self._sent)

    def stats(self) -> dict:
        now = time.monotonic()
        oldest = min((s.t_first for s in self._sent.values()), default=None)
        lat = sorted(self.latencies)
        return {
            "unconfirmed": len(self._sent), "unconfirmed_bytes": self._bytes,
            "oldest_unconfirmed_age_s": 0.0 if oldest is None else round(now - oldest, 3),
            "last_confirm_age_s": None if self.last_confirm is None else round(now - self.last_confirm, 3),
            "confirm_latency_ms": {"p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99)} if lat else None,
            **dict(self.counters),
        }


def _pct(sorted_values: list[float], q: float) -> float:
    i = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return round(sorted_values[i] * 1000, 2)
