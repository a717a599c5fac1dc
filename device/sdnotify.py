"""systemd's sd_notify protocol, and the watchdog that only pings while the pipeline makes progress.

    notifier = Notifier()                      # reads $NOTIFY_SOCKET; a no-op when it is unset
    watchdog = Watchdog(service, notifier)     # housekeeping hook: service.housekeeping.append(watchdog)

`Watchdog` sends READY=1 once the first frame has been captured (camera, model and spool were built
by then), WATCHDOG=1 every half `WatchdogSec` while no stage is stalled (a stage with input waiting
but no output for `health.stall_after_s`, or a capture thread hung in `read()`), and STATUS= with
the one-line summary. A stalled pipeline gets no pings, so systemd kills and restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from device.console.render import summary_line

log = logging.getLogger("crowdcap.sdnotify")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET", "")
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_usec = int(usec) if usec.isdigit() and (not pid or pid == str(os.getpid())) else 0
        self.sent = 0
        self.errors = 0
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of WatchdogSec (None when systemd set no watchdog)."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, *lines: str) -> bool:
        """Send `KEY=VALUE` lines in one datagram; False (never an exception) if it could not be sent."""
        if not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace
        elif not addr.startswith("/"):
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # a busy systemd must never block housekeeping
            self._sock.sendto("\n".join(lines).encode("utf-8", "replace"), addr)
        except OSError as e:
            self.errors += 1
            if self.errors <= 3:
                log.warning("sd_notify to %s failed: %s", self.address, e)
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog:
    """Housekeeping hook (called every ~0.5 s by the runtime); see the module docstring."""

    def __init__(self, service: Any, notifier: Notifier, *, stall_after_s: float | None = None,
                 status_every_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 health: Callable[[], dict[str, Any]] | None = None) -> None:
        self.service = service
        self.health = health  # the health reporter's latest sample: temperature and HOT in STATUS=
        self.notifier = notifier
        self.stall_after_s = stall_after_s if stall_after_s is not None else service.config.health.stall_after_s
        self.status_every_s = status_every_s
        self._clock = clock
        self.ready_sent = False
        self.pings = 0
        self.stalled: str | None = None
        self._last_ping = -1e18
        self._last_status = -1e18
        self._last_text = ""
        self._capture_seen: tuple[Any, float] = (None, clock())

    def __call__(self, service: Any) -> None:
        self.tick(self._clock())

    def tick(self, now: float) -> None:
        pipeline = self.service.pipeline
        if not self.ready_sent and pipeline.capture.frames_in > 0:
            self.ready_sent = self.notifier.ready(self._summary()) or not self.notifier.enabled
        self.stalled = self.find_stall(now)
        interval = self.notifier.watchdog_interval_s or 1.0
        if self.ready_sent and self.stalled is None and now - self._last_ping >= interval:
            if self.notifier.watchdog():
                self.pings += 1
            self._last_ping = now
        text = self._summary()
        if text != self._last_text and (self.stalled or now - self._last_status >= self.status_every_s):
            self.notifier.status(text)
            self._last_text, self._last_status = text, now

    def find_stall(self, now: float) -> str | None:
        """The stage that stopped making progress, or None."""
        pipeline = self.service.pipeline
        if pipeline.finished.is_set():
            return "pipeline ended"
        stage = pipeline.stalled_stage(self.stall_after_s)
        if stage is not None:
            return stage
        # a capture thread hung inside read(): no frames, not paused, and no retry being logged
        faults = pipeline.source_faults
        progress = (pipeline.capture.frames_in, len(faults), faults[-1]["seconds"] if faults else 0.0)
        seen, since = self._capture_seen
        if progress != seen or pipeline.paused:
            self._capture_seen = (progress, now)  # frames, or a failing source being retried: alive
            return None
        limit = getattr(pipeline, "rate_limit_fps", None)
        window = max(self.stall_after_s, 3.0 / limit) if limit else self.stall_after_s
        return "capture" if now - since > window else None

    def _summary(self) -> str:
        try:
            status = self.service.status()
        except Exception as e:
            return f"status unavailable: {type(e).__name__}"
        if self.stalled:
            status["stalled_stage"] = self.stalled
        if self.health is not None and "health" not in status:
            try:
                status["health"] = self.health() or {}
            except Exception:  # the summary must never take the watchdog down
                pass
        return summary_line(status)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
