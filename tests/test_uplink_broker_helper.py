"""The shared mosquitto helper really starts, stops and restarts a broker on the same port."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from mqtt_broker import port_open


def _roundtrip(host: str, port: int) -> bytes:
    got: list[bytes] = []
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = lambda _c, _u, m: (got.append(m.payload), done.set())
    c.connect(host, port)
    c.subscribe("t/x", qos=1)
    c.loop_start()
    try:
        c.publish("t/x", b"hello", qos=1).wait_for_publish(5)
        assert done.wait(5)
    finally:
        c.disconnect()  # before loop_stop: the loop thread then ends at once
        c.loop_stop()
    return got[0]


def test_broker_start_stop_restart(broker) -> None:
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    assert _roundtrip(broker.host, broker.port) == b"hello"
    broker.stop()
    assert not port_open(broker.host, broker.port)
    broker.start()
    assert _roundtrip(broker.host, broker.port) == b"hello"
    broker.restart()
    assert _roundtrip(broker.host, broker.port) == b"hello"
