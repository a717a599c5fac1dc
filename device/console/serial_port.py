"""The console on a serial port: a thread that reads the port and drives a `Shell`.

Works with any pyserial URL (`/dev/ttyS0`, `/dev/ttyGS0`, `loop://`, a pty slave). A port that
disappears (USB gadget unplugged) is reopened with a backoff; a peer that stops reading cannot block
the console (writes time out and are dropped, counted in `dropped_writes`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import serial

from device.console.shell import Backend, Shell

log = logging.getLogger("crowdcap.console")


class SerialConsole:
    def __init__(self, url: str, backend_factory: Callable[[], Backend], *, baudrate: int = 115200,
                 write_timeout: float = 1.0, reopen_max_s: float = 5.0) -> None:
        self.url = url
        self.baudrate = baudrate
        self.backend_factory = backend_factory
        self.write_timeout = write_timeout
        self.reopen_max_s = reopen_max_s
        self.dropped_writes = 0
        self.opened = threading.Event()
        self.shell: Shell | None = None
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: serial.SerialBase | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def serve_forever(self) -> None:
        self._run()

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                port = open_port(self.url, self.baudrate, write_timeout=self.write_timeout)
            except (serial.SerialException, OSError, ValueError) as e:
                if self.last_error != str(e):
                    log.warning("console: cannot open %s: %s (retrying)", self.url, e)
                    self.last_error = str(e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.reopen_max_s)
                continue
            backoff = 0.2
            self._port = port
            try:
                self._serve(port)
            except (serial.SerialException, OSError) as e:
                log.warning("console: %s failed: %s (reopening)", self.url, e)
                self.last_error = str(e)
            finally:
                self.opened.clear()
                try:
                    port.close()
                except (serial.SerialException, OSError):
                    pass

    def _serve(self, port: serial.SerialBase) -> None:
        quiet_until = 0.0

        def write(data: bytes) -> None:
            nonlocal quiet_until
            if time.monotonic() < quiet_until:
                self.dropped_writes += 1  # the peer stopped reading recently: do not block again yet
                return
            try:
                port.write(data)
            except (serial.SerialTimeoutException, queue.Full):  # queue.Full: pyserial's loop:// when full
                self.dropped_writes += 1  # nobody is reading: drop rather than block
                quiet_until = time.monotonic() + 2.0

        shell = Shell(self.backend_factory(), write)
        self.shell = shell
        shell.start()
        self.opened.set()
        while not self._stop.is_set():
            data = port.read(max(1, min(port.in_waiting, 4096)))
            if data:
                shell.feed(data)


def open_port(url: str, baudrate: int, *, write_timeout: float = 1.0) -> serial.SerialBase:
    """Open `url` 8N1. A device path is locked exclusively (flock): two consoles reading one serial
    line would each get half of the operator's keystrokes."""
    exclusive = {"exclusive": True} if "://" not in url else {}
    return serial.serial_for_url(url, baudrate=baudrate, bytesize=8, parity="N", stopbits=1, timeout=0.1,
                                 write_timeout=write_timeout, **exclusive)
