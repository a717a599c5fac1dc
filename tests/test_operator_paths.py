"""What a field operator hits first: wrong paths, a second service, a busy or missing serial port, a
config file the service may not write, commands that do not apply. Each must be one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_console_support import PIN, Terminal, make_service, notify_listener, short_dir

from device.cli import main
from device.commands.run import hold_lock
from device.control import Controller, Session

ROOT = Path(__file__).resolve().parents[1]


def _controller(root: Path, **kw) -> Controller:
    service = make_service(root, **kw)
    return Controller(service)


def _logged_in(ctl: Controller) -> Session:
    session = Session()
    assert ctl.execute(["login", PIN], session).ok
    return session


def _unwritable_dir() -> Path:
    # sysfs refuses new files even to root: the same error a read-only /etc gives under ProtectSystem=strict
    d = Path("/sys")
    try:
        fd, name = tempfile.mkstemp(dir=d)
    except OSError:
        return d
    os.close(fd)
    os.unlink(name)
    pytest.skip("no unwritable folder on this machine")


def test_config_set_when_the_file_cannot_be_written(tmp_path):
    ctl = _controller(tmp_path)
    ctl.service.config_path = _unwritable_dir() / "crowdcap.toml"
    session = _logged_in(ctl)
    r = ctl.execute(["config", "set", "capture.fps", "12"], session)
    assert r.ok, r.text
    assert not r.data["persisted"] and r.data["applied"] == "live" and ctl.service.config.capture.fps == 12.0
    assert "NOT saved" in r.text and "crowdcap.toml" in r.text and "internal error" not in r.text
    # a setting that only applies on restart cannot apply at all: say so
    r = ctl.execute(["config", "set", "capture.width", "320"], session)
    assert r.ok and r.data["applied"].startswith("not applied"), r.text
    # a model or policy change must survive a restart: there it is an error naming the file
    from capture.config import ConfigError
    from device.control import set_config

    with pytest.raises(ConfigError, match="redact.models: cannot write .*crowdcap.toml"):
        set_config(ctl.service, "redact.models", ["/x/card.toml"], must_persist=True)
    assert ctl.service.config.redact.models == []


def test_privacy_with_redaction_disabled_is_a_clear_error(tmp_path):
    ctl = _controller(tmp_path)  # --no-redact: the RedactionDisabled stand-in
    session = _logged_in(ctl)
    r = ctl.execute(["privacy", "reload"], session)
    assert not r.ok and "redaction is disabled" in r.text and "internal error" not in r.text
    r = ctl.execute(["privacy"], session)
    assert r.ok and "redaction disabled" in r.text


def test_version_names_the_model(tmp_path):
    ctl = _controller(tmp_path, stages="config", redact=True)
    try:
        r = ctl.execute(["version"], Session())
        assert r.ok and "centerface" in r.data.get("model", ""), r.text
        assert "model=" in r.text and "centerface" in r.text
    finally:
        ctl.service.close()


def test_os_errors_name_the_path(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["run", "--no-redact", "--max-frames", "1", "--state-dir", str(blocker / "state")]) == 2
    err = capsys.readouterr().err
    assert f"{blocker / 'state'}: not a directory" in err and "Traceback" not in err and "Error:" not in err


def test_config_file_that_is_not_utf8(tmp_path, capsys):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[device]\nid = "caf\xe9"\n')
    assert main(["config", "check", str(bad)]) == 2
    assert f"{bad}: not valid TOML (not UTF-8" in capsys.readouterr().err


def test_second_run_on_the_same_state_or_spool_is_refused(tmp_path, capsys):
    state, spool = tmp_path / "state", tmp_path / "spool"
    fd = hold_lock(state, "crowdcap.lock", "--state-dir")  # as the first `crowdcap run` holds it
    try:
        assert main(["run", "--no-redact", "--max-frames", "1", "--state-dir", str(state),
                     "--spool", str(tmp_path / "other-spool")]) == 2
        err = capsys.readouterr().err
        assert f"{state}: another crowdcap run (pid {os.getpid()})" in err and "--state-dir" in err
    finally:
        os.close(fd)
    fd = hold_lock(spool, ".crowdcap-run.lock", "--spool")
    try:
        assert main(["run", "--no-redact", "--max-frames", "1", "--state-dir", str(state), "--spool", str(spool)]) == 2
        assert f"{spool}: another crowdcap run" in capsys.readouterr().err
    finally:
        os.close(fd)


def test_console_port_missing_or_busy_fails_at_once(tmp_path, capsys):
    sock = str(short_dir() / "control.sock")
    assert main(["console", "--socket", sock, "--port", str(tmp_path / "ttyNOPE")]) == 2
    err = capsys.readouterr().err
    assert "--port:" in err and "ttyNOPE" in err
    from device.console.serial_port import open_port

    term = Terminal()
    held = open_port(term.slave_name, 115200)  # the service's own console holds its port like this
    try:
        assert main(["console", "--socket", sock, "--port", term.slave_name]) == 2
        err = capsys.readouterr().err
        assert "--port:" in err and "lock" in err
    finally:
        held.close()
        term.close()


def test_output_to_a_closed_pipe_is_not_an_error():
    # `crowdcap config reference | head -1`: the reader has gone before crowdcap writes
    proc = subprocess.Popen([sys.executable, "-m", "device.cli", "config", "reference"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"error" not in err.lower(), err


def test_systemd_status_line_has_temperature_and_hot(tmp_path, monkeypatch):
    # `systemctl status crowdcap` is the operator's first look: STATUS= must carry what the console's
    # status line carries (temperature, HOT cap), not only the pipeline counters

    from device.health import HealthSampler
    from device.operations import Operations

    root = short_dir()
    listener = notify_listener(root, timeout=0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(root / "notify.sock"))
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("78000\n")  # between thermal_soft_c (70) and thermal_hard_c (80)
    service = make_service(root)
    service.start()
    ops = Operations.start(service, control_socket=False, console=False, downlink=False)
    ops.reporter.sampler = HealthSampler([str(root)], thermal_root=tmp_path)
    try:
        messages: list[str] = []
        for _ in range(100):  # bounded: housekeeping runs until the summary carries the sample
            service.run_housekeeping()
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                pass
            if any("°C" in m for m in messages):
                break
        status = [m for m in messages if "STATUS=" in m and "°C" in m]
        assert status, messages
        assert "78°C" in status[-1] and "HOT: capture capped at" in status[-1], status[-1]
    finally:
        ops.close()
        service.close()
        listener.close()


def test_a_service_that_does_not_answer_is_named_as_such():
    # a hung (or SIGSTOPped) service: the socket accepts, nothing comes back; say so, never "timed out" alone
    import socket

    from device.control_socket import ControlClient, ServiceNotRunning

    path = short_dir() / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        with pytest.raises(ServiceNotRunning, match="does not answer .*within 0.3 s.*hung"):
            ControlClient(path, timeout=0.3).execute(["status"])
    finally:
        server.close()


def test_another_user_is_told_about_permissions_not_a_missing_service():
    # the control socket is 0600: an operator in the wrong account must not read "no service running"
    import socket

    from device.control_socket import ControlClient, ServiceNotRunning

    root = short_dir()
    root.chmod(0o755)
    path = root / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    path.chmod(0o600)
    if os.getuid() != 0:
        path.chmod(0)  # the owner itself is refused then; root is never refused, so it drops to nobody
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: an unprivileged account
        try:
            if os.getuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                ControlClient(path, timeout=2).execute(["status"])
                msg = "connected"
            except ServiceNotRunning as e:
                msg = str(e)
            os.write(write_fd, msg.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        os.waitpid(pid, 0)
        msg = os.read(read_fd, 4096).decode()
    finally:
        os.close(read_fd)
        server.close()
    assert "permission denied" in msg and "no service running" not in msg, msg


def test_no_service_names_the_absolute_socket_and_how_to_point_elsewhere(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CROWDCAP_CONFIG", raising=False)
    assert main(["status", "--socket", "state/control.sock"]) == 3
    out = capsys.readouterr().out
    assert f"{tmp_path / 'state' / 'control.sock'} not found" in out and "--config" in out, out


def test_a_run_that_fails_to_start_releases_its_locks(tmp_path, capsys):
    state, spool = tmp_path / "state", tmp_path / "spool"
    assert main(["run", "--no-redact", "--state-dir", str(state), "--spool", str(spool),
                 "--source", "replay:" + str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    for folder, name in ((state, "crowdcap.lock"), (spool, ".crowdcap-run.lock")):
        os.close(hold_lock(folder, name, "--x"))  # raises if the failed run still holds it


def test_refused_logins_and_restarts_are_in_the_log(tmp_path, caplog):
    # `log tail` / the journal are the operator's audit trail: who was refused, why the service exited 75
    import logging

    caplog.set_level(logging.INFO)  # what `crowdcap run` sets up: the log ring gets INFO
    ctl = _controller(tmp_path)
    attacker = Session()
    assert not ctl.execute(["login", "0000"], attacker).ok
    session = _logged_in(ctl)
    assert ctl.execute(["config", "set", "capture.fps", "12"], session).ok
    assert ctl.execute(["restart"], session).ok
    lines = "\n".join(ctl.service.log_ring)
    assert "console login refused: wrong PIN" in lines
    assert "config set capture.fps = 12" in lines
    assert "restart requested from the console" in lines
    ctl.service.close()


def test_config_check_reports_the_files_the_service_would_miss(tmp_path, capsys):
    # `config check` said "ok" for a config the service then refused at start (no policy, no card, ...)
    p = tmp_path / "c.toml"
    policy = tmp_path / "policy.toml"
    p.write_text(f'[redact]\npolicy = "{policy}"\nmodels = ["{tmp_path / "card.toml"}"]\n'
                 f'[capture]\nsource = "replay:{tmp_path / "rec"}"\n')
    assert main(["config", "check", str(p)]) == 2
    err = capsys.readouterr().err
    assert f"redact.policy: {policy}: no such file" in err
    assert "redact.models[0]:" in err and f"capture.source: {tmp_path / 'rec'}: no such folder" in err
    policy.write_text("")
    (tmp_path / "card.toml").write_text("")
    (tmp_path / "rec").mkdir()
    # the files exist now; their contents are checked too (an empty model card is not a card)
    assert main(["config", "check", str(p)]) == 2
    err = capsys.readouterr().err
    assert "redact.models[0]:" in err and "no such file" not in err


@pytest.mark.parametrize("argv", [["run", "--debug"], ["run", "--log-level", "INFO"],
                                  ["config", "check", "x.toml", "--debug"], ["status", "--debug"]])
def test_global_flags_after_the_command(argv):
    # the error hint says "run with --debug": people append it to the command they just ran
    from device.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.debug is ("--debug" in argv) and args.log_level == ("INFO" if "INFO" in argv else "WARNING")


def test_global_flags_before_the_command_still_count():
    from device.cli import build_parser

    args = build_parser().parse_args(["--debug", "--log-level", "ERROR", "run"])
    assert args.debug is True and args.log_level == "ERROR"
