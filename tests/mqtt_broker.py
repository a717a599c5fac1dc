"""A real mosquitto for tests: own config, free loopback port, start / stop / restart, bounded waits.

    with MosquittoBroker() as b:        # or the `broker` fixture in conftest.py
        connect(b.host, b.port); b.restart(); b.stop(); b.start()

The port stays the same across restarts so clients can reconnect to the same URL. Persistence is off
by default (a restart loses sessions and queues); `persistence=True` keeps them across a graceful
(SIGTERM) restart, like a production broker.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (never 1883)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port != 1883:
            return port


def wait_for(predicate, timeout: float, interval: float = 0.02, what: str = "condition") -> None:
    """Poll `predicate` until true; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """One mosquitto process on a fixed free port, restartable."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *, max_queued: int = 100000,
                 message_size_limit: int = 0, max_packet_size: int = 0, persistence: bool = False,
                 users: dict[str, str] | None = None) -> None:
        if not os.path.exists(MOSQUITTO):
            raise RuntimeError(f"mosquitto binary not found at {MOSQUITTO}")
        self.host = host
        self.port = port or free_port(host)
        self._dir = Path(tempfile.mkdtemp(prefix="crowdcap-mosq-"))
        self.config_path = self._dir / "mosquitto.conf"
        self.log_path = self._dir / "mosquitto.log"
        # max_queued_messages: mosquitto's default (1000) would drop QoS1 backlog for a slow subscriber.
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous false" if users else "allow_anonymous true",
            # persistence: sessions, subscriptions and queued messages survive a graceful restart
            # (mosquitto writes its database on SIGTERM; a SIGKILL loses what was only in memory).
            "persistence true" if persistence else "persistence false",
            f"persistence_location {self._dir}/",
            f"max_queued_messages {max_queued}",
            "max_inflight_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to 'mosquitto' and cannot write our temp dir
        if users:  # username/password clients only (mosquitto_passwd hashes the file)
            pw = self._dir / "passwd"
            pw.touch()
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
            lines.append(f"password_file {pw}")
        if message_size_limit:  # silently refuses bigger publishes (disconnects), announces nothing
            lines.append(f"message_size_limit {message_size_limit}")
        if max_packet_size:  # announced to MQTT 5 clients in CONNACK
            lines.append(f"max_packet_size {max_packet_size}")
        self.config_path.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)], stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        # The port can linger in TIME_WAIT-free but still-bound state for a moment after a stop; the
        # broker then exits at once with "Address already in use": retry within the timeout.
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self._proc.poll() is not None:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"mosquitto exited ({self._proc.returncode}): {self.log_tail()}")
                time.sleep(0.1)
                log = open(self.log_path, "ab")  # noqa: SIM115
                try:
                    self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)], stdout=log,
                                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                finally:
                    log.close()
                continue
            if time.monotonic() >= deadline:
                self.stop()
                raise TimeoutError(f"mosquitto on port {self.port} not ready after {timeout}s: {self.log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0, kill: bool = False) -> None:
        """Stop the broker (SIGTERM, or SIGKILL with kill=True) and wait until the port is closed."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
        wait_for(lambda: not port_open(self.host, self.port), timeout, what=f"port {self.port} to close")

    def restart(self, timeout: float = 10.0, kill: bool = False) -> None:
        self.stop(timeout, kill=kill)
        self.start(timeout)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
