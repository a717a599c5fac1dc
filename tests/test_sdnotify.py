"""sd_notify on a real AF_UNIX datagram socket set as NOTIFY_SOCKET; the watchdog stops pinging when a
stage stalls and resumes when it recovers."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from test_console_support import make_service, short_dir, wait_for

from device.runtime import RedactionDisabled
from device.sdnotify import Notifier, Watchdog


class Listener:
    """systemd's end: a datagram socket that collects notifications."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.messages

    def close(self) -> None:
        self.sock.close()


def env_for(address: str, watchdog_usec: int = 200_000) -> dict[str, str]:
    return {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(watchdog_usec), "WATCHDOG_PID": str(os.getpid())}


@pytest.mark.parametrize("abstract", [False, True])
def test_protocol_on_a_real_socket(abstract):
    root = short_dir()
    if abstract:
        name = f"crowdcap-test-{os.getpid()}-{time.monotonic_ns()}"
        listener, address = Listener("\0" + name), "@" + name
    else:
        address = str(root / "notify.sock")
        listener = Listener(address)
    try:
        n = Notifier(env_for(address))
        assert n.enabled and n.watchdog_interval_s == pytest.approx(0.1)
        assert n.ready("up, 30 fps") and n.watchdog() and n.status("line\nbreaks   squashed") and n.stopping()
        msgs = wait_for(lambda: len(listener.drain()) >= 4 and listener.messages, what="4 datagrams")
        assert msgs == ["READY=1\nSTATUS=up, 30 fps", "WATCHDOG=1", "STATUS=line breaks squashed", "STOPPING=1"]
    finally:
        listener.close()


def test_no_socket_is_a_quiet_no_op_and_a_dead_socket_is_not_fatal():
    assert not Notifier({}).ready()
    other_pid = {"NOTIFY_SOCKET": "/nonexistent/x.sock", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    n = Notifier(other_pid)
    assert n.watchdog_interval_s is None  # the watchdog was meant for another process
    assert not n.watchdog() and n.errors == 1


class Gate:
    """A stage that blocks while closed: a stalled stage."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.open = threading.Event()
        self.open.set()

    def apply(self, frame):
        self.open.wait(30)
        return frame


def test_watchdog_pings_only_while_the_pipeline_makes_progress():
    root = short_dir()
    address = str(root / "notify.sock")
    listener = Listener(address)
    gate = Gate("depth")
    service = make_service(root, stages=[RedactionDisabled(), gate])
    wd = Watchdog(service, Notifier(env_for(address)), stall_after_s=0.5, status_every_s=0.2)
    service.start()
    try:
        def run_for(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                wd.tick(time.monotonic())
                time.sleep(0.05)

        wait_for(lambda: (wd.tick(time.monotonic()), wd.ready_sent)[1], what="READY")
        wait_for(lambda: (run_for(0.1), listener.drain().count("WATCHDOG=1"))[1] >= 3, 10, "3 pings")
        assert any(m.startswith("READY=1\nSTATUS=running") for m in listener.messages), listener.messages

        gate.open.clear()  # the depth stage hangs: input piles up, nothing comes out
        # the pipeline names the first stage with input waiting and no output: the hung stage, or the
        # one blocked behind it
        wait_for(lambda: (wd.tick(time.monotonic()), wd.stalled)[1] in ("redact", "depth"), 10, "stall")
        listener.messages.clear()
        listener.drain()
        listener.messages.clear()
        run_for(0.6)
        msgs = listener.drain()
        assert "WATCHDOG=1" not in msgs
        assert any("STALLED: " in m for m in msgs) or "STALLED: " in wd._last_text

        gate.open.set()  # recovers: pings resume
        wait_for(lambda: (wd.tick(time.monotonic()), wd.stalled)[1] is None, 10, "recovery")
        listener.messages.clear()
        run_for(0.4)
        assert "WATCHDOG=1" in listener.drain()
    finally:
        gate.open.set()
        service.close()
        listener.close()


class HangingSource:
    """A camera whose read() hangs after a few frames (driver lock-up)."""

    def __init__(self, inner, after: int) -> None:
        self.inner, self.after, self.n = inner, after, 0
        self.release = threading.Event()
        self.intrinsics, self.depth_scale, self.fps = inner.intrinsics, inner.depth_scale, inner.fps

    def open(self) -> None:
        self.inner.open()

    def read(self):
        self.n += 1
        if self.n > self.after:
            self.release.wait(30)
            return None
        return self.inner.read()

    def close(self) -> None:
        self.release.set()
        self.inner.close()


def test_hung_capture_stops_the_pings():
    from capture.synthetic import SyntheticSource

    root = short_dir()
    address = str(root / "notify.sock")
    listener = Listener(address)
    service = make_service(root)
    service.source = HangingSource(SyntheticSource(64, 48, pace="fast", noise=False, cycle=2), after=5)
    service.pipeline.source = service.source
    wd = Watchdog(service, Notifier(env_for(address)), stall_after_s=0.5)
    service.start()
    try:
        wait_for(lambda: (wd.tick(time.monotonic()), wd.stalled)[1] == "capture", 10, "capture stall")
        listener.drain()
        listener.messages.clear()
        for _ in range(5):
            wd.tick(time.monotonic())
            time.sleep(0.05)
        assert "WATCHDOG=1" not in listener.drain()
    finally:
        service.source.release.set()
        service.close()
        listener.close()


def test_a_busy_systemd_never_blocks_the_sender():
    root = short_dir()
    listener = Listener(str(root / "notify.sock"))  # never read: its queue fills up
    try:
        n = Notifier(env_for(str(root / "notify.sock")))
        t0 = time.monotonic()
        results = [n.status(f"status {i}") for i in range(500)]
        assert time.monotonic() - t0 < 5
        assert results[0] and not all(results) and n.errors > 0
    finally:
        listener.close()
