"""The systemd units verify with `systemd-analyze verify` and carry the directives the device relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"


def _venv_crowdcap() -> Path:
    exe = Path(sys.executable).parent / "crowdcap"
    assert exe.exists(), f"{exe}: the crowdcap entry point is not installed in this environment"
    return exe


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (.ci/run installs it)")
def test_units_verify(tmp_path):
    # verify insists that ExecStart's program exists: point the units at this environment's crowdcap
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text().replace("/opt/crowdcap/.venv/bin/crowdcap", str(_venv_crowdcap()))
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.glob("*.service"))
    assert len(units) == 2
    out = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "crowdcap" not in out.stderr, out.stderr  # no warnings about our units either


def _directives(unit: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def test_device_unit_is_notify_watchdog_and_hardened():
    d = _directives("crowdcap.service")
    assert d["Type"] == "notify" and int(d["WatchdogSec"]) > 0 and d["Restart"] == "on-failure"
    assert d["User"] == "crowdcap" and set(d["SupplementaryGroups"].split()) == {"video", "dialout"}
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "CapabilityBoundingSet": ""}.items():
        assert d[key] == value, key
    assert "/var/lib/crowdcap" in d["ReadWritePaths"].split()
    assert d["ExecStart"].split()[1] == "run"
    # the stop timeout leaves room for the configured drain
    from device.config import PipelineConfig

    assert int(d["TimeoutStopSec"]) > PipelineConfig().drain_timeout


def test_ingest_unit_is_hardened():
    d = _directives("crowdcap-ingest.service")
    assert d["ExecStart"].split()[1] == "ingest" and d["Restart"] == "on-failure"
    assert d["ProtectSystem"] == "strict" and d["NoNewPrivileges"] == "yes" and d["PrivateDevices"] == "yes"


def _exec_start_argv(unit: str, env_overrides: dict[str, str] | None = None) -> list[str]:
    """ExecStart as systemd would run it: `Environment=` defaults (plus overrides, as an
    EnvironmentFile would set), `${VAR}` as one word, a bare `$VAR` split on whitespace."""
    import re
    import shlex

    env: dict[str, str] = {}
    exec_start = ""
    for line in (UNITS / unit).read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":  # space-separated assignments, each may be quoted (systemd.exec)
            for assignment in shlex.split(value):
                name, _, v = assignment.partition("=")
                env[name] = v
        elif key == "ExecStart":
            exec_start = value
    env.update(env_overrides or {})
    argv: list[str] = []
    for word in shlex.split(exec_start):
        if m := re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word):
            argv += env.get(m.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


@pytest.mark.parametrize("unit,overrides", [
    ("crowdcap.service", None),
    ("crowdcap-ingest.service", None),
    ("crowdcap-ingest.service", {"CROWDCAP_INGEST_ARGS": "--broker mqtts://b.example:8883 "
                                                         "--out /var/lib/crowdcap-ingest/s --share-group ingest"}),
    ("crowdcap-ingest.service", {"CROWDCAP_INGEST_ARGS": "--config /etc/crowdcap/ingest.toml"}),
])
def test_exec_start_parses_with_the_real_cli(unit, overrides):
    # systemd-analyze only checks that the program exists; a flag the command does not have would
    # still make the unit fail at every start (the ingest unit once passed `--config`)
    from device.cli import build_parser

    argv = _exec_start_argv(unit, overrides)
    assert argv[0] == "/opt/crowdcap/.venv/bin/crowdcap"
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit as e:
        raise AssertionError(f"{unit}: ExecStart {argv[1:]} is rejected by crowdcap's parser") from e
    assert callable(getattr(args, "func", None)), argv
    if unit == "crowdcap-ingest.service" and overrides and "--config" in overrides["CROWDCAP_INGEST_ARGS"]:
        # the unit adds no --broker/--out of its own: they would override the file's `brokers` and `out`
        assert args.config == "/etc/crowdcap/ingest.toml" and args.broker is None and args.out is None, argv
    elif unit == "crowdcap-ingest.service":
        brokers = args.broker if isinstance(args.broker, list) else [args.broker]
        assert brokers and all(b.startswith("mqtt") for b in brokers)
        assert args.out.startswith("/var/lib/crowdcap-ingest/")


def test_device_unit_keeps_cameras_and_serial_ports_reachable():
    # cameras (/dev/video*, /dev/bus/usb) and the console (/dev/ttyGS0, /dev/ttyS0) must stay openable:
    # anything that sets a device allow-list closes the device policy. ProtectClock=yes implies
    # DeviceAllow=char-rtc (systemd < 252: then only the RTC is reachable), PrivateDevices hides them all.
    d = _directives("crowdcap.service")
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert d.get(key, "no") in ("no", "false", "auto"), f"{key}={d[key]} restricts device access"
