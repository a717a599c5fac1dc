"""`crowdcap ingest` argument errors are one clear line, never a traceback; idle-exit exits 0."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from device.cli import main; sys.exit(main())",
                           "ingest", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_bad_broker_url(tmp_path) -> None:
    r = _run("--broker", "http://x:1", "--out", str(tmp_path))
    assert r.returncode == 2 and "broker" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_broker(tmp_path) -> None:
    from mqtt_broker import free_port

    r = _run("--broker", f"mqtt://127.0.0.1:{free_port()}", "--out", str(tmp_path))
    assert r.returncode == 2 and "cannot connect" in r.stderr and "Traceback" not in r.stderr


def test_bad_idle_exit_and_share_group(tmp_path) -> None:
    r = _run("--broker", "mqtt://127.0.0.1:1", "--out", str(tmp_path), "--idle-exit", "-1")
    assert r.returncode == 2 and "--idle-exit" in r.stderr
    r = _run("--broker", "mqtt://127.0.0.1:1", "--out", str(tmp_path), "--share-group", "a/b")
    assert r.returncode == 2 and "--share-group" in r.stderr


def test_idle_exit_zero_with_stats(tmp_path, broker) -> None:
    r = _run("--broker", broker.url, "--out", str(tmp_path / "o"), "--idle-exit", "0.5")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rejected_total"] == 0
