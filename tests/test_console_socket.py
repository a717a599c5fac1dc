"""The control socket (mode 0600, JSON lines), `crowdcap status` / `ctl` / `console --port` against it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest
from test_console_support import PIN, Terminal, make_service, short_dir, wait_for

from device.control import Controller
from device.control_socket import ControlClient, ControlServer, ServiceNotRunning, SocketBackend, socket_path

CLI = [sys.executable, "-m", "device.cli"]


@pytest.fixture
def served():
    root = short_dir()
    service = make_service(root)
    service.start()
    server = ControlServer(Controller(service), socket_path(service.config))
    server.start()
    try:
        yield service, server
    finally:
        server.close()
        service.close()


def test_socket_is_private_and_commands_work(served):
    service, server = served
    mode = stat.S_IMODE(os.stat(server.path).st_mode)
    assert stat.S_ISSOCK(os.stat(server.path).st_mode) and mode == 0o600
    client = ControlClient(server.path)
    wait_for(lambda: service.pipeline.capture.frames_in > 0, what="frames")
    assert client.execute(["status"]).data["frames_captured"] > 0
    r = client.execute(["config", "set", "capture.fps", "20"])  # local clients are trusted (0600 socket)
    assert r.ok and r.data["persisted"] and service.config.capture.fps == 20.0
    assert client.execute(["stop"]).ok and service.pipeline.paused
    # a console session over the socket must log in like the serial console
    console = SocketBackend(server.path)
    assert "login required" in console.execute(["start"]).data["error"]
    assert console.execute(["login", PIN]).ok
    assert console.execute(["start"]).ok and not service.pipeline.paused
    client.close()


def test_garbage_on_the_socket_gets_an_error_not_a_crash(served):
    import socket as so

    service, server = served
    with so.socket(so.AF_UNIX, so.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(server.path))
        s.sendall(b"\xff\xfenot json\n{\"argv\": 3}\n")
        data = b""
        while data.count(b"\n") < 2:
            data += s.recv(4096)
    replies = [json.loads(x) for x in data.splitlines()]
    assert all(not r["reply"]["ok"] and "argv" in r["reply"]["error"] for r in replies)
    assert ControlClient(server.path).execute(["version"]).ok


def test_second_service_on_same_socket_is_refused_and_stale_socket_is_replaced(served):
    service, server = served
    other = ControlServer(Controller(service), server.path)
    with pytest.raises(OSError, match="already listening"):
        other.start()
    server.close()
    # a crashed service leaves its socket file behind: a new one replaces it
    import socket as so

    s = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    s.bind(str(server.path))
    s.close()
    fresh = ControlServer(Controller(service), server.path)
    fresh.start()
    try:
        assert ControlClient(server.path).execute(["version"]).ok
    finally:
        fresh.close()


def test_cli_status_and_ctl(served):
    service, server = served
    wait_for(lambda: service.pipeline.capture.frames_in > 0, what="frames")
    out = subprocess.run([*CLI, "status", "--socket", str(server.path), "--json"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["device_id"] == "test-dev"
    out = subprocess.run([*CLI, "ctl", "--socket", str(server.path), "config", "get", "capture.fps"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "capture.fps = 30.0" in out.stdout
    out = subprocess.run([*CLI, "ctl", "--socket", str(server.path), "config", "set", "capture.fps", "x"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "capture.fps: expected a number" in out.stdout


def test_cli_without_a_service_says_so_fast():
    path = short_dir() / "control.sock"
    t0 = time.monotonic()
    out = subprocess.run([*CLI, "status", "--socket", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 3 and "no service running" in out.stdout
    assert time.monotonic() - t0 < 20
    with pytest.raises(ServiceNotRunning):
        ControlClient(path).execute(["status"])


def test_console_command_on_a_pty_without_a_service_never_hangs():
    root = short_dir()
    term = Terminal()
    proc = subprocess.Popen([*CLI, "console", "--port", term.slave_name, "--socket", str(root / "control.sock")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        term.read_until(rb"crowdcap> ", timeout=30)
        st = term.json_command("status")
        assert not st["ok"] and st["service"] == "not running" and "no service running" in st["error"]
        assert "commands (available while the service runs)" in term.command("help --text")
        assert term.json_command("version")["service"] == "not running"
        # the service comes up: the same console now reaches it
        service = make_service(root)
        service.start()
        server = ControlServer(Controller(service), root / "state" / "control.sock")
        server.start()
        try:
            proc_socket_dir = root / "control.sock"
            os.symlink(server.path, proc_socket_dir)
            assert term.json_command("status")["ok"]
            assert "login required" in term.json_command("stop")["error"]
            assert term.json_command(f"login {PIN}")["ok"]
            assert term.json_command("stop")["ok"] and service.pipeline.paused
        finally:
            server.close()
            service.close()
    finally:
        proc.terminate()
        proc.wait(10)
        term.close()
