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
