"""The running service's command layer on a local unix socket (mode 0600): JSON lines.

    request:  {"argv": ["config", "get", "capture.fps"], "console": false}
    response: {"reply": {"ok": true, "cmd": "config", ...}, "text": "capture.fps = 30.0"}

A connection is one session. `"console": true` marks a session that must `login` with the PIN like
the serial console (that is what `crowdcap console --port` opens); other local clients are trusted:
only the service user (and root) can open a 0600 socket.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
from pathlib import Path
from typing import Any

from device.control import COMMANDS, Controller, Reply, Session
from device.version import package_version

log = logging.getLogger("crowdcap.control")

MAX_REQUEST = 1 << 20
_MAX_CLIENTS = 8


class ServiceNotRunning(Exception):
    """Nobody is listening on the control socket."""


def socket_path(cfg: Any) -> Path:
    """Where the service listens: `<device.state_dir>/control.sock`."""
    return Path(cfg.device.state_dir) / "control.sock"


class ControlServer:
    def __init__(self, controller: Controller, path: str | Path) -> None:
        self.controller = controller
        self.path = Path(path)
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._clients = threading.BoundedSemaphore(_MAX_CLIENTS)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if len(os.fsencode(self.path)) >= 104:
            raise OSError(f"control socket path too long for a unix socket: {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            try:
                ControlClient(self.path, timeout=1.0).execute(["version"])
            except ServiceNotRunning:
                self.path.unlink()  # stale socket of a crashed service
            else:
                raise OSError(f"another crowdcap service is already listening on {self.path}")
        # bind under a random name, restrict it, then rename: the final path is never reachable with
        # wider permissions
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(tmp))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            sock.listen(8)
        except OSError:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="control-socket", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if not self._clients.acquire(blocking=False):
                with contextlib.suppress(OSError):
                    conn.sendall(_line({"reply": {"ok": False, "cmd": "", "error": "too many control clients"},
                                        "text": "error: too many control clients"}))
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="control-client", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        session: Session | None = None
        try:
            conn.settimeout(1.0)
            buf = bytearray()
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    raw, _, rest = bytes(buf).partition(b"\n")
                    buf = bytearray(rest)
                    response, session = self._handle(raw, session)
                    conn.sendall(_line(response))
                if len(buf) > MAX_REQUEST:
                    conn.sendall(_line(_error_response(f"request over {MAX_REQUEST} bytes")))
                    return
        except OSError:
            pass
        finally:
            conn.close()
            self._clients.release()

    def _handle(self, raw: bytes, session: Session | None) -> tuple[dict[str, Any], Session | None]:
        try:
            req = json.loads(raw)
            argv = req["argv"]
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _error_response('expected {"argv": [strings...]}'), session
        if session is None:
            console = bool(req.get("console", False))
            session = Session(origin="console" if console else "socket", authorized=not console)
        reply = self.controller.execute(argv, session)
        return {"reply": reply.to_dict(), "text": reply.text}, session


class ControlClient:
    """Talks to the service; one connection is one session (keeps its login)."""

    def __init__(self, path: str | Path, *, timeout: float = 15.0, console: bool = False) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.console = console
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def execute(self, argv: list[str]) -> Reply:
        for attempt in (0, 1):
            fresh = self._sock is None
            sock = self._connect()
            try:
                sock.sendall(_line({"argv": argv, "console": self.console}))
                raw = self._read_line(sock)
            except TimeoutError:
                self.close()  # connected, but no answer: the service is there and stuck (or stopped)
                raise ServiceNotRunning(f"the service does not answer on {self.path} (no reply within "
                                        f"{self.timeout:g} s): it may be hung; see `systemctl status crowdcap` "
                                        "and `journalctl -u crowdcap`") from None
            except (OSError, ConnectionError) as e:
                self.close()
                if fresh or attempt:
                    raise ServiceNotRunning(f"control socket {self.path}: {e}") from None
                continue  # the service restarted since the last command: reconnect once
            try:
                obj = json.loads(raw)
                d = dict(obj["reply"])
                return Reply(bool(d.pop("ok")), str(d.pop("cmd", argv[0] if argv else "")), d, str(obj["text"]))
            except (ValueError, KeyError, TypeError):
                return Reply(False, argv[0] if argv else "", {"error": "garbled reply from the service"},
                             "error: garbled reply from the service")
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buf.clear()

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        if not self.path.exists():
            # absolute: a relative state_dir (the default "state") depends on where you stand
            raise ServiceNotRunning(f"no service running (control socket {self.path.absolute()} not found; "
                                    "pass the service's --config FILE or --socket PATH if it runs elsewhere)")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except PermissionError:  # the socket is 0600: the service is there, this user may not talk to it
            sock.close()
            raise ServiceNotRunning(f"permission denied on {self.path}: run this as the service's user "
                                    "(sudo -u crowdcap ...) or root") from None
        except OSError as e:
            sock.close()
            raise ServiceNotRunning(f"no service running (control socket {self.path}: {e.strerror or e})") from None
        self._sock = sock
        return sock

    def _read_line(self, sock: socket.socket) -> bytes:
        while b"\n" not in self._buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("service closed the connection")
            self._buf += chunk
            if len(self._buf) > 64 * MAX_REQUEST:
                raise ConnectionError("reply too large")
        raw, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        return raw


class SocketBackend:
    """Console backend that forwards to the running service; says plainly when there is none."""

    def __init__(self, path: str | Path, *, timeout: float = 15.0) -> None:
        self.client = ControlClient(path, timeout=timeout, console=True)

    def execute(self, argv: list[str]) -> Reply:
        try:
            return self.client.execute(argv)
        except ServiceNotRunning as e:
            return offline_reply(argv, str(e))


def offline_reply(argv: list[str], why: str) -> Reply:
    """What a command answers when no service is running (never a hang)."""
    name = argv[0].lower() if argv else ""
    if name == "help":
        rows = "\n".join(f"  {usage:<40} {text}" for _, usage, text in COMMANDS)
        return Reply(True, name, {"service": "not running", "commands": {n: u for n, u, _ in COMMANDS}},
                     f"{why}\ncommands (available while the service runs):\n{rows}")
    if name == "version":
        v = package_version()
        return Reply(True, name, {"version": v, "service": "not running"}, f"version={v}  service not running")
    return Reply(False, name, {"service": "not running", "error": why}, f"error: {why}")


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()


def _error_response(msg: str) -> dict[str, Any]:
    return {"reply": {"ok": False, "cmd": "", "error": msg}, "text": f"error: {msg}"}
