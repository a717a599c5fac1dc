"""All operations parts around one real Service with the real uplink to mosquitto: serial console on
a pty, control socket, sd_notify on a real datagram socket, telemetry, and a signed downlink command."""

from __future__ import annotations

import base64

import pytest
from test_console_support import (
    PIN,
    Terminal,
    collect_topics,
    make_service,
    notify_listener,
    short_dir,
    wait_for,
)

from device.control_socket import ControlClient
from device.operations import Operations


@pytest.mark.slow
def test_operations_around_a_running_service(broker, monkeypatch):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from device.downlink import sign_command

    root = short_dir()
    notify = notify_listener(root)
    monkeypatch.setenv("NOTIFY_SOCKET", str(root / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    key = Ed25519PrivateKey.generate()
    pub = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    term = Terminal()
    service = make_service(root, stages="config", broker=broker.url,
                           extra=f'port = "{term.slave_name}"\n\n[health]\ntelemetry_period = 0.5\n\n'
                                 f'[downlink]\npublic_key = "{pub}"\n')
    sub, seen = collect_topics(broker, "test-dev")
    service.start()
    ops = Operations.start(service)
    datagrams: list[str] = []

    def pump() -> list[str]:
        service.run_housekeeping()
        try:
            while True:
                datagrams.append(notify.recv(4096).decode())
        except TimeoutError:
            pass
        return datagrams

    try:
        wait_for(lambda: any(d.startswith("READY=1") for d in pump()), 15, "READY=1")
        wait_for(lambda: "WATCHDOG=1" in pump(), 15, "WATCHDOG=1")
        # the serial console hosted by the service
        term.read_until(rb"crowdcap> ", timeout=15)
        st = term.json_command("status")
        assert st["ok"] and "health" in st and st["details"]["uplink"]["broker"] == broker.url
        assert term.json_command(f"login {PIN}")["ok"]
        assert term.json_command("spool stats")["spool"]["records"] >= 0
        assert term.json_command("spool flush")["ok"]
        # the control socket
        client = ControlClient(ops.server.path)
        assert client.execute(["net"]).data["broker"] == broker.url
        client.close()
        # telemetry on the broker
        wait_for(lambda: (pump(), seen["telemetry"])[1], 15, "telemetry")
        # a signed command over MQTT
        wait_for(lambda: service.stages["uplink"].status()["connected"], 15, "uplink connected")
        sub.publish("crowdcap/v1/test-dev/cmd", sign_command(key, "test-dev", "stop", request_id="op1"), qos=1)
        wait_for(lambda: any(r.get("id") == "op1" and r["ok"] for r in seen["result"]), 15, "cmd result")
        assert service.pipeline.paused
        assert ops.status()["downlink"]["accepted"] == 1
        wait_for(lambda: (pump(), seen["telemetry"][-1].get("ops", {}).get("downlink", {}).get("accepted"))[1] == 1,
                 15, "downlink counters in telemetry")
        assert term.json_command("status")["ops"]["console"]["open"]
    finally:
        ops.close()
        service.close()
        sub.loop_stop()
        sub.disconnect()
        term.close()
    try:
        wait_for(lambda: "STOPPING=1" in pump(), 10, "STOPPING=1")
    finally:
        notify.close()
