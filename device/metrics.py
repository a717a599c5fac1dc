"""Per-stage counters and latency windows. Cheap on the hot path: a few integer adds and a deque append."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

import numpy as np

_WINDOW = 2048  # latency samples kept per stage (about a minute at 30 fps)
_FPS_WINDOW_S = 5.0


class StageMetrics:
    """Counters for one stage. Written by the stage's own thread, read by status/telemetry."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.frames_in = 0
        self.frames_out = 0
        self.drops = 0  # frames dropped on purpose by backpressure (only before redaction)
        self.withheld: Counter[str] = Counter()  # frames a stage refused, by reason
        self.errors: Counter[str] = Counter()  # unexpected exceptions, by type
        self.queue_depth = 0
        self.last_out_ns = 0
        self.started_ns = time.monotonic_ns()
        self._lat = deque[int](maxlen=_WINDOW)
        self._out_times = deque[int](maxlen=_WINDOW)
        self._lock = threading.Lock()

    def record(self, latency_ns: int) -> None:
        now = time.monotonic_ns()
        with self._lock:
            self.frames_out += 1
            self.last_out_ns = now
            self._lat.append(latency_ns)
            self._out_times.append(now)

    def latency_ms(self) -> tuple[float, float]:
        """(p50, p99) over the recent window, milliseconds; (0, 0) before any frame."""
        with self._lock:
            if not self._lat:
                return 0.0, 0.0
            arr = np.fromiter(self._lat, dtype=np.int64, count=len(self._lat))
        p50, p99 = np.percentile(arr, [50, 99]) / 1e6
        return float(p50), float(p99)

    def fps(self) -> float:
        """Output frames per second over the last few seconds."""
        now = time.monotonic_ns()
        cutoff = now - int(_FPS_WINDOW_S * 1e9)
        with self._lock:
            recent = [t for t in self._out_times if t >= cutoff]
        if len(recent) < 2:
            return 0.0
        span = (now - recent[0]) / 1e9
        return (len(recent) - 1) / span if span > 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        p50, p99 = self.latency_ms()
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "drops": self.drops,
            "withheld": dict(self.withheld),
            "errors": dict(self.errors),
            "fps": round(self.fps(), 2),
            "latency_ms_p50": round(p50, 3),
            "latency_ms_p99": round(p99, 3),
            "queue_depth": self.queue_depth,
        }
