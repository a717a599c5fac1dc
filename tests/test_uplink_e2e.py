"""UplinkStage → real mosquitto → Ingest: a session folder with exact counts, fail-closed stage."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
from uplink_helpers import IngestThread, committed_seqs, make_frame, uplink_cfg, wait_for_frames

from capture.frame import FrameWithheld
from uplink import build_stage


def test_unredacted_frame_refused_and_nothing_on_disk(tmp_path) -> None:
    stage = build_stage(uplink_cfg(tmp_path), "dev1", "s1")
    with pytest.raises(FrameWithheld) as e:
        stage.apply(make_frame(1).replace(redaction=None))
    assert e.value.reason == "unredacted"
    assert len(stage.spool) == 0 and stage.spool.stats()["disk_bytes"] == 0
    stage.close()


def test_stream_to_ingest_session_folder(tmp_path, broker) -> None:
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    stage = build_stage(uplink_cfg(tmp_path, broker.url), "dev1", "s1")
    commands: list[bytes] = []
    stage.on_command(commands.append)
    stage.start()
    frames = [make_frame(i, cloud=(i == 10)) for i in range(40)]
    for f in frames:
        assert stage.apply(f) is f
    stage.publish("event", {"what": "hello"})
    stage.publish("status", {"state": "running"}, retain=True)
    stage.publish_command_result({"id": 1, "ok": True})
    assert stage.drain(20)
    st = stage.status()
    assert st["spool_records"] == 0 and st["connected"] and st["sent"] >= 42
    seqs = wait_for_frames(out, 40, 20)
    stats = ing.stop()
    stage.close()
    assert sorted(seqs) == list(range(40))
    assert stats["rejected_total"] == 0, stats["rejected"]
    assert stats["frame"] == 40 and stats["cloud"] == 1
    ses = out / "dev1" / "s1"
    d = cv2.imread(str(ses / "depth" / "00000007.png"), cv2.IMREAD_UNCHANGED)
    # lossless end to end, at TUM's 5000 units/m (the device sent millimetres: ×5 exactly)
    assert d.dtype == np.uint16 and np.array_equal(d, frames[7].depth.astype(np.uint32) * 5)
    assert len((ses / "rgb.txt").read_text().splitlines()) == 42
    assert len((ses / "trajectory.txt").read_text().splitlines()) == 42  # device estimates
    assert not (ses / "groundtruth.txt").exists()  # the ingest has no ground truth
    cam = json.loads((ses / "camera.json").read_text())
    assert cam["width"] == 160 and cam["fx"] == 130.0 and cam["depth_scale"] == 5000.0
    assert (ses / "clouds" / "00000010.ply").read_bytes().startswith(b"ply\n")
    assert len((ses / "manifests.jsonl").read_text().splitlines()) == 40
    report = (ses / "report.html").read_text()
    assert "data:image/jpeg;base64," in report and "<svg" in report and "http" not in report.split("xmlns")[0]
    assert "hello" in (ses / "events.jsonl").read_text()
    assert committed_seqs(out) == sorted(committed_seqs(out)) or len(set(seqs)) == 40


def test_spool_only_then_backlog_is_historical(tmp_path, broker) -> None:
    cfg = uplink_cfg(tmp_path)
    stage = build_stage(cfg, "dev1", "s1")
    for i in range(10):
        stage.apply(make_frame(i))
    assert not stage.drain(0.1) and stage.status()["spool_records"] == 10
    stage.close()
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    cfg.broker = broker.url
    stage = build_stage(cfg, "dev1", "s2")
    stage.start()
    assert stage.drain(20)
    for i in range(10, 15):
        stage.apply(make_frame(i, session_id="s2"))
    assert stage.drain(20)
    wait_for_frames(out, 10, 10)
    wait_for_frames(out, 5, 10, session="s2")
    ing.stop()
    stage.close()
    old = [json.loads(x) for x in (out / "dev1" / "s1" / "frames.jsonl").read_text().splitlines()]
    new = [json.loads(x) for x in (out / "dev1" / "s2" / "frames.jsonl").read_text().splitlines()]
    assert len(old) == 10 and all(f["historical"] for f in old)
    assert len(new) == 5 and not any(f["historical"] for f in new)


@pytest.mark.parametrize("limit", ["max_packet_size", "message_size_limit"])
def test_broker_packet_limit_respected(tmp_path, limit) -> None:
    """A broker's packet limit: announced (MQTT 5 Maximum Packet Size) -> smaller chunks at once;
    silent (mosquitto's message_size_limit just drops the link) -> chunk size halves until it fits."""
    from mqtt_broker import MosquittoBroker

    with MosquittoBroker(**{limit: 6000}) as b:
        out = tmp_path / "out"
        ing = IngestThread(b.url, out)
        stage = build_stage(uplink_cfg(tmp_path, b.url, max_payload=65536), "dev1", "s1")
        stage.start()
        for i in range(5):
            stage.apply(make_frame(i))
        assert stage.drain(30)
        seqs = wait_for_frames(out, 5, 10)
        st = stage.status()
        ing.stop()
        stage.close()
    assert sorted(seqs) == list(range(5)) and st["evictions"] == {}
    assert st["sender"]["max_payload"] < 6000
    assert (st["sender"].get("payload_limit_halved", 0) > 0) == (limit == "message_size_limit")


def test_commands_reach_callback_and_results_reach_ingest(tmp_path, broker) -> None:
    import threading

    import paho.mqtt.client as mqtt

    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    stage = build_stage(uplink_cfg(tmp_path, broker.url), "dev1", "s1")
    got: list[bytes] = []
    arrived = threading.Event()
    stage.on_command(lambda p: (got.append(p), arrived.set()))
    stage.start()
    stage.publish("event", {"hello": 1})
    assert stage.drain(10)  # connected and subscribed
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish("crowdcap/v1/dev1/cmd", b"\x00signed-bytes", qos=1).wait_for_publish(5)
    assert arrived.wait(10) and got == [b"\x00signed-bytes"]
    stage.publish_command_result({"id": 7, "ok": True})
    assert stage.drain(10)
    c.disconnect()
    c.loop_stop()
    deadline = time.monotonic() + 10
    events = out / "dev1" / "s1" / "events.jsonl"
    while not (events.exists() and '"id":7' in events.read_text().replace(" ", "")):
        assert time.monotonic() < deadline, "command result not ingested"
        time.sleep(0.05)
    ing.stop()
    stage.close()


def test_frame_larger_than_quota_is_withheld_and_counted(tmp_path) -> None:
    stage = build_stage(uplink_cfg(tmp_path, spool_quota_mb=0.005), "dev1", "s1")  # 5 KiB < one frame
    with pytest.raises(FrameWithheld) as e:
        stage.apply(make_frame(1))
    assert e.value.reason == "spool_full"
    assert stage.status()["evictions"] == {"quota_refused_frame": 1}
    stage.close()
