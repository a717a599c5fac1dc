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
backoff up to 8 × timeout, counted as `resent_unconfirmed`. Like TCP's retransmission timer, the
timeout stretches to 3 × the smoothed confirmation latency when the ingest is merely slow (a busy
ingest is not sent everything twice).
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
        self._latency_ewma: float | None = None

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
        base = self.effective_timeout()
        out = [rid for rid, s in self._sent.items() if now - s.t_last >= base * min(MAX_BACKOFF, 2 ** (s.attempts - 1))]
        for rid in out:  # the next deadline counts from now, with the next backoff step
            s = self._sent[rid]
            s.t_last = now
            s.attempts += 1
        self.counters["resent_unconfirmed"] += len(out)
        return sorted(out)

    def effective_timeout(self) -> float:
        return max(self.timeout, 3 * self._latency_ewma) if self._latency_ewma is not None else self.timeout

    def forget_all(self) -> None:
        """The link dropped: everything in the spool is replayed from its start anyway."""
        self._sent.clear()
        self._bytes = 0

    def _forget(self, rid: int, now: float) -> None:
        s = self._sent.pop(rid, None)
        if s is not None:
            self._bytes -= s.size
            self.latencies.append(now - s.t_first)
            if s.attempts == 1:  # (Karn: a resent record's latency says nothing about the ingest)
                lat = now - s.t_first
                self._latency_ewma = lat if self._latency_ewma is None else 0.875 * self._latency_ewma + 0.125 * lat

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

    def quiet_for(self) -> float:
        """Seconds since the last confirmation (or since the first record was sent, if none yet)."""
        now = time.monotonic()
        first = min((s.t_first for s in self._sent.values()), default=now)
        return now - (self.last_confirm if self.last_confirm is not None else first)

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
            "confirm_timeout_s": round(self.effective_timeout(), 2),
            "confirm_latency_ms": {"p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99)} if lat else None,
            **dict(self.counters),
        }


def undelivered_reason(left: int, inflight_chunks: int, connected: bool, last_error: str,
                       track: Confirmations | None) -> str:
    """What is still in the spool and why, in words an operator can act on ('' if nothing)."""
    if not left and not inflight_chunks:
        return ""
    if not connected:
        err = last_error or "still connecting"
        what = "the broker refused" if "refused" in err else "no connection to the broker"
        return f"{left} record(s) not delivered: {what} ({err})"
    unconfirmed = track.unconfirmed() if track is not None else 0
    if unconfirmed:
        st = track.stats()
        last = st["last_confirm_age_s"]
        return (f"{left} record(s) not confirmed: no confirmations arriving from the ingest ({unconfirmed} sent "
                f"and acknowledged by the broker, oldest {st['oldest_unconfirmed_age_s']:.0f} s ago; last "
                f"confirmation {'never' if last is None else f'{last:.0f} s ago'}; is `crowdcap ingest` running "
                f"and speaking acks? else set uplink.delivery = \"broker\")")
    return f"{left} record(s) not yet sent ({inflight_chunks} chunk(s) awaiting the broker's PUBACK)"


def _pct(sorted_values: list[float], q: float) -> float:
    i = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return round(sorted_values[i] * 1000, 2)
