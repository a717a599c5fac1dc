"""`crowdcap run` end to end with operations wired: sd_notify on a real socket, the serial console on a
pty, `crowdcap status` over the control socket, telemetry and a signed command over a real broker, and
`restart` exiting non-zero for systemd."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_console_support import (
    PIN_HASH,
    Terminal,
    collect_topics,
    notify_listener,
    short_dir,
    wait_for,
)

CLI = [sys.executable, "-m", "device.cli"]
RUN_PY = Path(__file__).resolve().parent.parent / "device" / "commands" / "run.py"


@pytest.mark.skipif("Operations" not in RUN_PY.read_text(),
                    reason="crowdcap run does not start device.operations.Operations yet (lead wires it)")
@pytest.mark.slow
def test_crowdcap_run_with_operations(broker):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from device.downlink import sign_command

    root = short_dir()
    key = Ed25519PrivateKey.generate()
    pub = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    term = Terminal()
    cfg = root / "crowdcap.toml"
    cfg.write_text(f'[device]\nid = "run-dev"\nstate_dir = "{root / "state"}"\n'
                   f'[capture]\nwidth = 160\nheight = 120\nfps = 10.0\n[depth]\nenabled = false\n'
                   f'[uplink]\nspool_dir = "{root / "spool"}"\nbroker = "{broker.url}"\n'
                   f'[console]\nport = "{term.slave_name}"\npin_hash = "{PIN_HASH}"\n'
                   f'[health]\ntelemetry_period = 0.5\n[downlink]\npublic_key = "{pub}"\n')
    notify = notify_listener(root)
    sub, seen = collect_topics(broker, "run-dev")
    env = dict(os.environ, NOTIFY_SOCKET=str(root / "notify.sock"), WATCHDOG_USEC="2000000")
    proc = subprocess.Popen([*CLI, "run", "--config", str(cfg)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    datagrams: list[str] = []

    def recv() -> list[str]:
        try:
            while True:
                datagrams.append(notify.recv(4096).decode())
        except TimeoutError:
            return datagrams

    try:
        wait_for(lambda: any(d.startswith("READY=1") for d in recv()), 60, "READY=1")
        wait_for(lambda: "WATCHDOG=1" in recv(), 30, "WATCHDOG=1")
        term.read_until(rb"crowdcap> ", timeout=30)
        assert term.json_command("status")["ok"]
        out = subprocess.run([*CLI, "status", "--config", str(cfg), "--json"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0 and '"device_id":"run-dev"' in out.stdout, out.stdout + out.stderr
        wait_for(lambda: seen["telemetry"], 30, "telemetry")
        sub.publish("crowdcap/v1/run-dev/cmd", sign_command(key, "run-dev", "stop", request_id="r1"), qos=1)
        wait_for(lambda: any(r.get("id") == "r1" and r["ok"] for r in seen["result"]), 30, "command result")
        out = subprocess.run([*CLI, "ctl", "--config", str(cfg), "restart"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert proc.wait(60) == 75, proc.stderr.read()[-2000:] if proc.stderr else ""
        assert "STOPPING=1" in recv()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        sub.loop_stop()
        sub.disconnect()
        term.close()
        notify.close()
