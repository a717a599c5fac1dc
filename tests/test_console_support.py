"""Shared helpers for the console, control-socket and downlink tests (no tests here)."""

from __future__ import annotations

import os
import re
import select
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from capture.synthetic import SyntheticSource
from device import config as config_mod
from device.console.auth import hash_pin
from device.runtime import RedactionDisabled, Service

PIN = "2468"
PIN_HASH = hash_pin(PIN, n=2**10)  # cheap scrypt for tests; production default is 2**14


def short_dir() -> Path:
    """A short temp dir: unix socket paths must stay under ~100 bytes."""
    return Path(tempfile.mkdtemp(prefix="cc", dir="/tmp"))


def make_service(root: Path, *, stages: list[Any] | str | None = None, extra: str = "", broker: str = "",
                 pace: str = "realtime", redact: bool = False) -> Service:
    """A real Service on a small synthetic source, with a config file in `root`. stages="config": the
    chain the config builds (no redaction, no depth, the real uplink stage to `broker`)."""
    cfg_path = root / "crowdcap.toml"
    cfg_path.write_text(
        f'[device]\nid = "test-dev"\nstate_dir = "{root / "state"}"\n\n'
        f'[uplink]\nspool_dir = "{root / "spool"}"\nbroker = "{broker}"\n\n'
        f'[redact]\nenabled = {str(redact).lower()}\n\n[depth]\nenabled = false\n\n'
        f'[console]\npin_hash = "{PIN_HASH}"\nlockout_s = 60.0\n' + extra)
    cfg = config_mod.load(cfg_path)
    source = SyntheticSource(64, 48, fps=30.0, pace=pace, device_id="test-dev", noise=False, cycle=2)
    if stages == "config":
        return Service(cfg, cfg_path, source=source)
    return Service(cfg, cfg_path, source=source, stages=stages if stages is not None else [RedactionDisabled()])


def decode_json_message(payload: bytes) -> tuple[str, dict[str, Any]]:
    """(kind, payload) of a JSON message as the uplink publishes it: plain JSON (status, telemetry) or
    a single-chunk wire message (event, cmd/result)."""
    import json

    from uplink import wire

    if payload[:1] == b"{":
        body = json.loads(payload)
        return body["type"], body

    chunk = wire.parse_chunk(payload)
    message, _signature = wire.split_signature(chunk.data, chunk.signed)  # wire v1.1: signed by the device
    msg = wire.decode(message)
    return msg.kind, msg.meta()


def wait_for(cond: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Terminal:
    """The operator's end of a pty pair; the console opens `slave_name` with pyserial."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        self.slave_name = os.ttyname(self._slave)
        self.buf = b""

    def send(self, data: bytes | str, timeout: float = 30.0) -> None:
        """Write all of `data`, reading the console's output meanwhile so neither side blocks."""
        data = data.encode() if isinstance(data, str) else data
        deadline = time.monotonic() + timeout
        while data:
            if time.monotonic() > deadline:
                raise AssertionError(f"console did not take input within {timeout} s")
            r, w, _ = select.select([self.master], [self.master], [], 0.2)
            if r:
                self.buf += os.read(self.master, 65536)
            if w:
                n = os.write(self.master, data[:1024])
                data = data[n:]

    def read_until(self, pattern: str | bytes, timeout: float = 10.0) -> bytes:
        """Everything up to and including the first match of regex `pattern` (consumed)."""
        pat = re.compile(pattern.encode() if isinstance(pattern, str) else pattern, re.S)
        deadline = time.monotonic() + timeout
        while True:
            m = pat.search(self.buf)
            if m:
                out, self.buf = self.buf[:m.end()], self.buf[m.end():]
                return out
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout} s; got {self.buf[-500:]!r}")
            r, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if r:
                try:
                    self.buf += os.read(self.master, 65536)
                except OSError:
                    pass

    def command(self, line: str, timeout: float = 10.0) -> str:
        """Send a line and return the console's answer (up to the next prompt)."""
        self.send(line + "\r")
        out = self.read_until(rb"crowdcap[>#] ", timeout).decode("utf-8", "replace")
        return out

    def json_command(self, line: str, timeout: float = 10.0) -> dict[str, Any]:
        import json

        out = self.command(line + " --json", timeout)
        for ln in out.splitlines():
            if ln.startswith("{"):
                return json.loads(ln)
        raise AssertionError(f"no JSON line in {out!r}")

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


def notify_listener(root: Path, timeout: float = 0.1) -> socket.socket:
    """A real AF_UNIX datagram socket at root/notify.sock, as systemd's NOTIFY_SOCKET would be."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(root / "notify.sock"))
    sock.settimeout(timeout)
    return sock


def collect_topics(broker: Any, device_id: str, kinds: tuple[str, ...] = ("telemetry", "result")) -> tuple[Any, dict]:
    """A subscriber to crowdcap/v1/<device_id>/# collecting decoded JSON bodies by topic kind; returns
    (client, {kind: [body, ...]}). Call client.loop_stop(); client.disconnect() when done."""
    import paho.mqtt.client as mqtt

    seen: dict[str, list] = {k: [] for k in kinds}

    def on_message(_c: Any, _u: Any, m: Any) -> None:
        kind = m.topic.rsplit("/", 1)[-1]
        if kind in seen:
            seen[kind].append(decode_json_message(m.payload)[1])

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"crowdcap/v1/{device_id}/#", qos=1)
    sub.loop_start()
    return sub, seen
