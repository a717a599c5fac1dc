"""Bandwidth budget: a byte token bucket for the sender and the degrade policy for the encoder."""

from __future__ import annotations

import time

DEGRADE_NONE, DEGRADE_QUALITY, DEGRADE_KEYFRAMES_ONLY = 0, 1, 2
DEGRADE_NAMES = {0: "none", 1: "lower_jpeg_quality", 2: "keyframes_only"}


class TokenBucket:
    """`rate` bytes/s with `burst` seconds of credit; rate 0 = unlimited."""

    def __init__(self, rate: float, burst_seconds: float = 1.0) -> None:
        self.rate = float(rate)
        self.capacity = max(self.rate * burst_seconds, 1.0)
        self.tokens = self.capacity
        self._t = time.monotonic()
        self.waited_s = 0.0

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._t) * self.rate)
        self._t = now

    def wait_time(self, n: int) -> float:
        """Seconds until `n` bytes may go (0 = now). A message larger than the burst goes once the
        bucket is full, driving it negative, so big chunks are never starved."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        need = min(n, self.capacity)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def consume(self, n: int) -> None:
        if self.rate > 0:
            self._refill()
            self.tokens -= n


def degrade_level(backlog_bytes: int, rate: float, after_seconds: float) -> int:
    """How far to degrade new frames given the unsent backlog: none below `after_seconds` of backlog at
    the budget, lower JPEG quality up to twice that, keyframes only beyond."""
    if rate <= 0:
        return DEGRADE_NONE
    backlog_s = backlog_bytes / rate
    if backlog_s < after_seconds:
        return DEGRADE_NONE
    return DEGRADE_QUALITY if backlog_s < 2 * after_seconds else DEGRADE_KEYFRAMES_ONLY
