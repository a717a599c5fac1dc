"""The demo's embedded broker: mosquitto when present, amqtt (MQTT 3.1.1) otherwise — both carry a stream."""

from __future__ import annotations

import pytest
from uplink_helpers import IngestThread, make_frame, uplink_cfg, wait_for_frames

from uplink import build_stage
from uplink.embedded import mosquitto_binary, start_broker


@pytest.mark.parametrize("prefer", ["amqtt", "mosquitto"])
def test_embedded_broker_carries_a_session(tmp_path, prefer) -> None:
    if prefer == "mosquitto" and mosquitto_binary() is None:
        pytest.skip("mosquitto not installed")
    url, stop = start_broker(prefer)
    try:
        ing = IngestThread(url, tmp_path / "out")
        stage = build_stage(uplink_cfg(tmp_path, url, max_payload=4096), "dev1", "s1")
        stage.start()
        for i in range(15):
            stage.apply(make_frame(i))
        assert stage.drain(20)
        seqs = wait_for_frames(tmp_path / "out", 15, 15)
        stats = ing.stop()
        proto = stage.status()["sender"]["protocol"]
        stage.close()
    finally:
        stop()
    assert sorted(seqs) == list(range(15)) and stats["rejected_total"] == 0
    assert proto == ("mqtt311" if prefer == "amqtt" else "mqtt5")
