"""Deadlines (redact.detector.Deadline): one shared watchdog thread stops each frame's runs on time,
a later-added earlier deadline is not kept waiting behind a longer one, and a finished (cancelled)
deadline never fires. Every wait is bounded."""

from __future__ import annotations

import threading
import time

from redact.detector import Deadline


def wait_expired(d: Deadline, bound_s: float = 5.0) -> float:
    """Seconds until `d` expired (polled, bounded)."""
    t0 = time.monotonic()
    while not d.expired and time.monotonic() - t0 < bound_s:
        time.sleep(0.002)
    return time.monotonic() - t0


def test_expires_on_time_and_earliest_first() -> None:
    with Deadline(5.0) as long, Deadline(1.0) as mid, Deadline(0.05) as short:
        took = wait_expired(short)
        assert short.expired and 0.03 <= took < 1.0
        assert not mid.expired and not long.expired  # the watchdog woke for the new earliest only
        assert mid.expired or wait_expired(mid) < 3.0
        assert not long.expired


def test_a_finished_deadline_never_fires() -> None:
    with Deadline(0.05) as done:
        pass
    with Deadline(0.2) as later:
        wait_expired(later)
    assert later.expired and not done.expired


def test_deadlines_from_many_threads() -> None:
    """The stage, canary and form passes may hold deadlines at once, from different threads."""
    results: list[bool] = []

    def one(i: int) -> None:
        with Deadline(0.02 + 0.01 * (i % 5)) as d:
            wait_expired(d)
            results.append(d.expired)
        with Deadline(10.0) as d2:
            results.append(not d2.expired)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 40 and all(results)
