"""The operator console over a real pty pair (pyserial on the slave), against a real Service."""

from __future__ import annotations

import tomllib

import pytest
from test_console_support import PIN, Terminal, make_service, short_dir, wait_for

from device.console.auth import LoginGuard, hash_pin, verify_pin
from device.console.serial_port import SerialConsole
from device.console.shell import LocalBackend
from device.control import Controller


@pytest.fixture
def rig():
    root = short_dir()
    service = make_service(root)
    service.start()
    controller = Controller(service)
    term = Terminal()
    console = SerialConsole(term.slave_name, lambda: LocalBackend(controller))
    console.start()
    term.read_until(rb"crowdcap> ")
    try:
        yield service, controller, term, console
    finally:
        console.stop()
        service.close()
        term.close()


def test_open_commands_work_without_login(rig):
    service, _, term, _ = rig
    wait_for(lambda: service.pipeline.capture.frames_in > 2, what="frames")
    assert "config [get] KEY" in term.command("help")
    st = term.json_command("status")
    assert st["ok"] and st["cmd"] == "status" and st["frames_captured"] > 0
    assert "capture" in st["stages"] and "health" not in st or isinstance(st["health"], dict)
    v = term.json_command("version")
    assert v["ok"] and v["device_id"] == "test-dev"
    assert "(needs login)" in term.command("help start --text")
    assert term.json_command("help start")["login"] == "yes"


def test_replies_are_json_by_default_text_on_request(rig):
    service, _, term, _ = rig
    out = term.command("version")  # Tasmota: JSON without asking
    assert '{"ok":true,"cmd":"version"' in out
    assert "version=" in term.command("version --text")
    assert '"format":"text"' in term.command("format text")
    assert "version=" in term.command("version") and '"cmd":"version"' in term.command("version --json")
    assert "replies: json" in term.command("format json --text")
    assert '"cmd":"version"' in term.command("version")


def test_status_sections_mean_something(rig):
    service, _, term, _ = rig
    wait_for(lambda: service.pipeline.capture.frames_in > 2, what="frames")
    s1 = term.json_command("status 1")
    assert s1["status"] == 1 and s1["device"]["device_id"] == "test-dev" and "stages" not in s1
    s3 = term.json_command("Status 3")
    assert "capture" in s3["pipeline"]["stages"] and "frames_dropped_before_redaction" in s3["pipeline"]
    assert "device" not in s3
    s5 = term.json_command("status 5")
    assert set(s5) >= {"ok", "cmd", "status", "network"} and "pipeline" not in s5
    s0 = term.json_command("status 0")
    assert {"device", "firmware", "pipeline", "health", "network", "spool", "time", "redaction"} <= set(s0)
    bad = term.json_command("status 42")
    assert not bad["ok"] and "section number" in bad["error"]
    text = term.command("status 8 --text")
    assert "redaction:" in text and "{" not in text and "'" not in text  # words, not Python reprs


def test_pin_is_never_echoed(rig):
    service, _, term, _ = rig
    out = term.command(f"login {PIN}")
    assert PIN not in out and "login *" in out
    term.command("logout")
    term.send("login\r")
    assert b"PIN: " in term.read_until(rb"PIN: ")
    out = term.command(PIN)
    assert PIN not in out and '"logged_in":true' in out and "crowdcap# " in out


def test_reads_need_no_login_changes_do(rig):
    service, _, term, _ = rig
    assert term.json_command("config capture.fps")["ok"]
    assert term.json_command("config get")["ok"]
    assert term.json_command("spool stats")["ok"] or "no uplink" in term.json_command("spool stats")["error"]
    r = term.json_command("config set capture.fps 10")
    assert not r["ok"] and "login required" in r["error"]
    r = term.json_command("config capture.fps 10")
    assert not r["ok"] and "login required" in r["error"]
    assert "login required" in term.json_command("spool flush")["error"]


def test_state_changes_need_login_then_work_and_persist(rig):
    service, _, term, _ = rig
    r = term.json_command("stop")
    assert not r["ok"] and "login required" in r["error"]
    assert not service.pipeline.paused
    r = term.json_command("login 0000")
    assert not r["ok"] and "wrong PIN" in r["error"]
    assert term.json_command(f"login {PIN}")["ok"]
    assert "crowdcap# " in term.command("status")  # the prompt shows the session is logged in
    assert term.json_command("stop")["paused"] is True and service.pipeline.paused
    assert term.json_command("start")["paused"] is False and not service.pipeline.paused

    r = term.json_command("config set capture.fps 12.5")
    assert r["ok"] and r["persisted"] and r["value"] == 12.5 and r["applied"] == "live"
    assert service.config.capture.fps == 12.5
    on_disk = tomllib.loads(service.config_path.read_text())
    assert on_disk["capture"]["fps"] == 12.5 and on_disk["console"]["pin_hash"]  # other keys kept
    assert term.json_command("config capture.fps")["value"] == 12.5  # Tasmota style: no value = query

    bad = term.json_command("config set capture.fps -3")
    assert not bad["ok"] and bad["error"].startswith("capture.fps:")
    assert term.json_command("config set capture.nope 1")["error"].startswith("capture.nope: unknown key")
    assert term.json_command("config get console.pin_hash")["value"] == "***"  # secrets masked
    assert "expected 'scrypt$" in term.json_command("config set console.pin_hash hunter2")["error"]
    assert service.config.capture.fps == 12.5 and tomllib.loads(service.config_path.read_text())["capture"]["fps"] == 12.5

    assert term.json_command("log tail 5")["ok"]
    assert not term.json_command("log tail many")["ok"]
    st = term.json_command("selftest")
    assert st["checks"]["disk"]["result"] == "pass" and st["checks"]["broker"]["result"] == "skip"
    assert term.json_command("logout")["ok"]
    assert not term.json_command("stop")["ok"]


def test_lockout_after_five_failures_survives_reconnect(rig):
    service, controller, term, _ = rig
    for _ in range(4):
        assert "wrong PIN" in term.json_command("login 1111")["error"]
    r = term.json_command("login 1111")
    assert "locked for 60 s" in r["error"]
    r = term.json_command(f"login {PIN}")  # even the right PIN is refused while locked
    assert not r["ok"] and "console locked" in r["error"]
    # a new console session (reconnect) shares the device-wide lock
    assert "console locked" in LocalBackend(controller).execute(["login", PIN]).data["error"]
    # and so does a restarted service (the count is kept in the state dir)
    restarted = Controller(service)
    assert "console locked" in LocalBackend(restarted).execute(["login", PIN]).data["error"]


def test_lockout_delay_grows_and_success_resets():
    now = [0.0]
    stored = hash_pin("1357", n=2**10)
    guard = LoginGuard(max_failures=5, lockout_s=30.0, clock=lambda: now[0])
    delays = []
    for _ in range(3):
        for _ in range(5):
            r = guard.attempt("0000", stored)
        delays.append(r.retry_after_s)
        assert not guard.attempt("1357", stored).ok
        now[0] += r.retry_after_s + 0.1
    assert delays == [30.0, 60.0, 120.0]
    assert guard.attempt("1357", stored).ok
    for _ in range(4):
        guard.attempt("0000", stored)
    assert guard.locked_for() == 0  # the success reset the count
    assert not guard.attempt("1357", "").ok  # no PIN configured: nobody logs in (fail closed)
    assert not verify_pin("1357", "scrypt$garbage")


def test_line_editing_and_hostile_input(rig):
    service, _, term, console = rig
    term.send(b"stasus\x7f\x7f\x7ftus --json\r")  # backspace (DEL) editing
    assert b'"cmd":"status"' in term.read_until(rb"crowdcap> ")
    term.send("sé\x08\x08status\r")  # backspace removes a whole UTF-8 character
    assert b"running" in term.read_until(rb"crowdcap> ")
    term.send(b"x" * 5000 + b"\r")
    assert b"line too long (limit 4096 bytes)" in term.read_until(rb"crowdcap> ")
    term.send(b"status \xff\xfe\r")
    assert b"not valid UTF-8" in term.read_until(rb"crowdcap> ")
    term.send(b"stop and some half li\x00")  # BREAK cancels the half-typed line
    term.read_until(rb"\^C\r\ncrowdcap> ")
    term.send(b"\x1b[A\x1b[Bversion\r")  # arrow keys ignored
    assert b'"cmd":"version"' in term.read_until(rb"crowdcap> ")
    term.send(b'help "unbalanced\r')
    assert b"cannot parse line" in term.read_until(rb"crowdcap> ")
    assert not service.pipeline.paused


def test_flood_is_rate_limited_and_pipeline_keeps_going(rig):
    service, _, term, console = rig
    before = service.pipeline.capture.frames_in
    term.send(b"version\r" * 2000)
    wait_for(lambda: console.shell.dropped_lines > 0, what="dropped lines")
    out = b""
    for _ in range(50):  # still responsive after the flood (lines typed during it may be dropped)
        term.send("status --json\r")
        try:
            out += term.read_until(rb'"cmd":"status"[^\n]*\r\ncrowdcap> ', timeout=0.5)
            break
        except AssertionError:
            out += term.buf
            term.buf = b""
    assert b"input flood" in out and b"lines dropped" in out
    assert console.shell.commands_run <= 41 + 20 * 30  # burst + rate over a generous window
    wait_for(lambda: service.pipeline.capture.frames_in > before + 5, what="capture progress during flood")


def test_lockout_record_survives_restart_and_damage_does_not_unlock(tmp_path):
    stored = hash_pin("1357", n=2**10)
    state = tmp_path / "console-lockout.json"
    guard = LoginGuard(max_failures=2, lockout_s=30.0, state_file=state)
    guard.attempt("0", stored)
    assert "locked for 30 s" in guard.attempt("0", stored).message
    again = LoginGuard(max_failures=2, lockout_s=30.0, state_file=state)
    assert again.locked_for() > 25 and not again.attempt("1357", stored).ok
    state.write_text("{garbage")
    damaged = LoginGuard(max_failures=2, lockout_s=30.0, state_file=state)
    assert damaged.locked_for() > 25
