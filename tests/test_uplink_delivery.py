"""End-to-end delivery: the ingest's acks make records leave the device's spool — never a broker PUBACK.

Real mosquitto, the real ingest; each fault test ends in exact counts at the ingest folder (0 lost,
0 duplicates) with the spool as shipped (fsync = "interval").
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mqtt_broker import MosquittoBroker, wait_for
from uplink_helpers import Feeder, IngestThread, committed_seqs, make_frame, uplink_cfg, wait_for_frames

from uplink import build_stage, messages, wire
from uplink.spool import Spool


def _exact(out: Path, n: int) -> None:
    seqs = committed_seqs(out)
    dups = [s for s, c in Counter(seqs).items() if c > 1]
    missing = sorted(set(range(n)) - set(seqs))
    assert not dups and not missing, f"duplicates {dups[:10]}, missing {missing[:10]} of {n}"


def test_acks_empty_the_spool_and_survive_a_restart(tmp_path, broker) -> None:
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    acks: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: acks.append(json.loads(m.payload))
    sub.connect(broker.host, broker.port)
    sub.subscribe("crowdcap/v1/dev1/ack", qos=1)
    sub.loop_start()
    stage = build_stage(uplink_cfg(tmp_path, broker.url), "dev1", "s1")
    stage.start()
    for i in range(30):
        stage.apply(make_frame(i, cloud=(i == 5)))
    stage.publish("event", {"what": "hello"})
    stage.publish("telemetry", {"uplink": stage.status()})  # plain JSON, spooled, confirmed like frames
    assert stage.drain(30), stage.undelivered()
    st = stage.status()
    stats = ing.stop()
    report = (out / "dev1" / "s1" / "report.html").read_text()
    assert "Delivery (end-to-end confirmation)" in report  # the report shows the device's link state
    stage.close()
    sub.loop_stop()
    sub.disconnect()
    _exact(out, 30)
    assert st["delivery"] == "ingest" and st["records_unconfirmed"] == 0 and st["spool_records"] == 0
    assert st["sender"]["records_confirmed"] == 33 and st["sender"]["confirm_latency_ms"]["p99"] > 0
    assert stats["confirm"]["records_confirmed"] >= 33 and stats["confirm"].get("fsync_errors", 0) == 0
    assert acks and all(a["v"] == 1 and len(a["spool"]) == 16 and a["rejected"] == [] for a in acks)
    assert len(acks) <= 15  # batched: a few ack messages, not one per record
    ids = {i for a in acks for lo, hi in a["ranges"] for i in range(lo, hi + 1)}
    assert len(ids) >= 33
    s = Spool(tmp_path / "spool")  # the confirmations are in the ack log: nothing to resend
    assert len(s) == 0 and s.stats()["segments"] <= 1
    s.close()


def test_without_an_ingest_nothing_leaves_and_run_says_why(tmp_path, broker) -> None:
    stage = build_stage(uplink_cfg(tmp_path, broker.url, confirm_timeout=0.3), "dev1", "s1")
    stage.start()
    for i in range(10):
        stage.apply(make_frame(i))
    assert not stage.drain(2.0)  # the broker PUBACKed everything; nobody confirmed it
    st = stage.status()
    why = stage.undelivered()
    assert st["spool_records"] == 10 and st["records_unconfirmed"] == 10
    assert st["resent_unconfirmed"] >= 10 and st["oldest_unconfirmed_age_s"] > 1.0
    assert "no confirmations arriving from the ingest" in why, why
    assert st["last_error"].startswith("no confirmation from the ingest"), st["last_error"]  # and a WARNING
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)  # a late ingest gets the resends (same message ids)
    try:
        assert stage.drain(30), stage.undelivered()
        wait_for(lambda: not stage.status()["last_error"], 5, what="the warning to clear")
    finally:
        ing.stop()
        stage.close()
    _exact(out, 10)


def test_broker_delivery_mode_keeps_puback_semantics(tmp_path, broker) -> None:
    stage = build_stage(uplink_cfg(tmp_path, broker.url, delivery="broker"), "dev1", "s1")
    stage.start()
    for i in range(5):
        stage.apply(make_frame(i))
    assert stage.drain(20)
    st = stage.status()
    stage.close()
    assert st["delivery"] == "broker" and st["sender"]["delivery"] == "broker" and st["spool_records"] == 0


def test_link_trouble_is_in_status_and_logged(tmp_path, caplog) -> None:
    with MosquittoBroker() as b:
        port = b.port
    stage = build_stage(uplink_cfg(tmp_path, f"mqtt://127.0.0.1:{port}"), "dev1", "s1")
    stage.start()
    stage.apply(make_frame(0))
    wait_for(lambda: stage.status()["last_error"], 10, what="last_error")
    assert not stage.drain(0.5)
    st = stage.status()
    why = stage.undelivered()
    stage.close()
    assert st["link"] == "down" and "connect" in st["last_error"], st
    assert "no connection to the broker" in why or "refused" in why
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "uplink" in r.getMessage()]
    assert 1 <= len(warned) <= 3  # said, not repeated on every retry


def test_stream_beyond_the_quota_keeps_disk_within_budget(tmp_path, broker) -> None:
    """Retention: with a healthy ingest, 4× the disk budget streams through; the spool's files never
    exceed the budget and end at (nearly) nothing — delivered segments do not linger."""
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    frame_bytes = len(wire.encode(messages.encode_frame(make_frame(1), messages.depth_codec("delta-zstd"), 85)))
    budget_mb = 150 * frame_bytes / 2**20  # live quota ~90 frames: room for ~1 s of confirmation lag
    stage = build_stage(uplink_cfg(tmp_path, broker.url, spool_quota_mb=budget_mb), "dev1", "s1")
    stage.start()
    spool = tmp_path / "spool"
    n, peak = 450, 0
    feed = Feeder(stage, n, fps=100)
    while feed.thread.is_alive():
        peak = max(peak, _disk(spool))
        time.sleep(0.01)
    feed.join()
    assert stage.drain(30), stage.undelivered()
    st = stage.status()
    stats = ing.stop()
    stage.close()
    assert st["spool"]["appended_bytes"] > budget_mb * 2**20 * 3
    assert peak <= budget_mb * 2**20
    assert st["spool"]["segments"] <= 1 and st["spool"]["disk_bytes"] <= st["spool"]["quota_bytes"]
    # On a loaded machine the confirmation lag can exceed the tiny live quota for a moment: then a
    # frame is evicted — counted, so the ingest's gap equals the count (never a silent loss).
    evicted = st["evictions"].get("quota_frame", 0)
    seqs = committed_seqs(out)
    assert len(seqs) == len(set(seqs)) == n - evicted and evicted <= n // 4, st["evictions"]
    assert set(st["evictions"]) <= {"quota_frame"} and stats["rejected_total"] == 0
    assert len(list(spool.glob("seg-*.log"))) <= 1 and st["spool"]["bytes"] == 0


def _disk(folder: Path) -> int:
    total = 0
    for p in folder.glob("seg-*.log"):
        try:
            total += p.stat().st_size
        except FileNotFoundError:  # deleted meanwhile: that is the point
            pass
    return total


def _stream_through_broker_kill(tmp_path: Path, b: MosquittoBroker, n: int = 160) -> dict:
    out = tmp_path / "out"
    ing = IngestThread(b.url, out)
    stage = build_stage(uplink_cfg(tmp_path, b.url, confirm_timeout=1.0), "dev1", "s1")
    stage.start()
    feed = Feeder(stage, n, fps=60)
    feed.wait_accepted(50)
    b.stop(kill=True)  # SIGKILL: whatever the broker held only in memory is gone
    feed.wait_accepted(90)
    b.start()
    feed.join()
    assert stage.drain(60), stage.undelivered()
    wait_for_frames(out, n, 10)
    stats = ing.stop()
    st = stage.status()
    stage.close()
    _exact(out, n)
    assert stats["rejected_total"] == 0 and st["evictions"] == {}
    return st


@pytest.mark.slow
def test_mosquitto_sigkill_without_persistence(tmp_path, broker) -> None:
    st = _stream_through_broker_kill(tmp_path, broker)
    assert st["sender"]["connects"] >= 2


@pytest.mark.slow
def test_mosquitto_with_default_autosave_sigkilled(tmp_path) -> None:
    with MosquittoBroker(persistence=True) as b:  # autosave_interval left at its default (1800 s)
        _stream_through_broker_kill(tmp_path, b)


@pytest.fixture
def small_tmpfs(tmpfs) -> Path:
    return tmpfs("1m")


@pytest.mark.slow
def test_ingest_disk_full_stops_confirming_nothing_lost(tmp_path, broker, small_tmpfs) -> None:
    out = small_tmpfs / "out"
    ing = IngestThread(broker.url, out)
    ing.ingest.retry_delay = 0.3
    # 4 KiB chunks: partials and reassembly on the full disk too
    stage = build_stage(uplink_cfg(tmp_path, broker.url, confirm_timeout=0.5, max_payload=4096), "dev1", "s1")
    stage.start()
    n = 120  # ~25 KB of files each: about a third fit on the 1 MiB disk
    Feeder(stage, n, fps=100).join()
    assert not stage.drain(3.0)
    st = stage.status()
    assert st["spool_records"] > 0  # kept: what the full disk could not hold was never confirmed
    stored = len(set(committed_seqs(out)))
    assert 0 < stored < n
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    try:
        assert stage.drain(60), stage.undelivered()
    finally:
        stats = ing.stop()
        stage.close()
    _exact(out, n)
    assert stats["storage_errors"] > 0 and st["resent_unconfirmed"] > 0


@pytest.mark.slow
def test_failover_between_two_brokers(tmp_path) -> None:
    """Two mosquittos, the device lists both; the one it is connected to is SIGKILLed mid-stream."""
    with MosquittoBroker() as a, MosquittoBroker() as b:
        out = tmp_path / "out"
        ing_a, ing_b = IngestThread(a.url, out), IngestThread(b.url, out)  # one ingest per node, shared OUT
        stage = build_stage(uplink_cfg(tmp_path, f"{a.url},{b.url}", confirm_timeout=1.0), "dev1", "s1")
        stage.start()
        n = 120
        feed = Feeder(stage, n, fps=60)
        feed.wait_accepted(40)
        node = stage.status()["sender"]["broker_node"]
        (a if node == a.url else b).stop(kill=True)
        feed.join()
        assert stage.drain(60), stage.undelivered()
        st = stage.status()
        for ing in (ing_a, ing_b):
            if ing.ingest.connected or ing.thread.is_alive():
                ing.ingest.stop()
                ing.thread.join(30)
        stage.close()
    _exact(out, n)
    assert st["sender"]["broker_node"] != node and st["sender"]["node_switches"] >= 1


def test_rejected_record_stops_resending_and_is_counted(tmp_path, broker) -> None:
    """A record the ingest will never accept (bad CRC) is named in the ack's `rejected`: the device
    drops it, counts `rejected_bad_crc`, and does not resend it forever."""
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    stage = build_stage(uplink_cfg(tmp_path, broker.url, confirm_timeout=0.3), "dev1", "s1")
    bad = bytearray(wire.encode(messages.encode_frame(make_frame(7), messages.depth_codec("zstd"), 80)))
    bad[-5] ^= 0xFF  # inside the body: the body CRC no longer matches
    stage.spool.append(bytes(bad), 1, wire.FRAME)
    stage.start()
    for i in range(5):
        stage.apply(make_frame(i))
    assert stage.drain(20), stage.undelivered()
    st = stage.status()
    stats = ing.stop()
    stage.close()
    assert st["evictions"] == {"rejected_bad_crc": 1} and st["sender"]["records_rejected"] == 1
    assert stats["rejected"] == {"bad_crc": 1}  # received once (maybe twice), never forever
    _exact(out, 5)


def test_telemetry_with_a_registry_is_confirmed_only_when_signed(tmp_path, broker) -> None:
    from uplink.identity import DeviceKey, registry_entry

    key = DeviceKey.load_or_create(tmp_path / "state")
    reg = tmp_path / "devices.toml"
    reg.write_text(registry_entry("dev1", key))
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out, registry=str(reg))
    stage = build_stage(uplink_cfg(tmp_path, broker.url), "dev1", "s1", signer=key.sign)
    stage.start()
    stage.publish("telemetry", {"cpu": 1.5})
    stage.apply(make_frame(0))
    assert stage.drain(20), stage.undelivered()
    stage.close()
    # a forger replays the device's telemetry under another record id of the same spool
    spool_hex = Spool(tmp_path / "spool").epoch.hex()
    forged = b'{"v":1,"type":"telemetry","device_id":"dev1","session_id":"s1","seq":99,"t_utc":1.0,' \
             b'"id":"' + spool_hex.encode() + b'00000000000000ff"}'
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    pub.publish("crowdcap/v1/dev1/telemetry", forged, qos=1).wait_for_publish(5)
    wait_for(lambda: ing.ingest.stats()["rejected_total"] >= 1, 10, what="the forged telemetry refused")
    pub.loop_stop()
    pub.disconnect()
    stats = ing.stop()
    lines = (out / "dev1" / "s1" / "telemetry.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["payload"] == {"cpu": 1.5}
    assert stats["rejected"] == {"unsigned": 1}


def test_status_is_plain_json_for_any_mqtt_tool(tmp_path, broker) -> None:
    stage = build_stage(uplink_cfg(tmp_path, broker.url), "dev1", "s1")
    stage.start()
    stage.publish("status", {"state": "online", "summary": "running"}, retain=True)
    wait_for(lambda: stage.status()["connected"] and not stage.sender.direct_pending(), 10, what="status sent")
    got = subprocess.run(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t", "crowdcap/v1/dev1/status",
                          "-C", "1", "-W", "5"], capture_output=True, text=True, timeout=10)
    stage.close()
    body = json.loads(got.stdout)
    assert body["v"] == 1 and body["type"] == "status" and body["state"] == "online" and body["device_id"] == "dev1"


@pytest.mark.slow
def test_run_exits_0_only_when_the_ingest_confirmed(tmp_path, broker, capsys) -> None:
    from device.cli import main

    common = ["run", "--source", "synthetic", "--pace", "fast", "--no-redact", "--max-frames", "8",
              "--broker", broker.url, "--device-id", "dev1"]
    # no ingest: the broker takes everything, nobody confirms it -> exit 3, saying why
    rc = main(common + ["--state-dir", str(tmp_path / "st1"), "--spool", str(tmp_path / "sp1"), "--drain-timeout", "2"])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "not everything was ingest-confirmed" in err and "no confirmations arriving from the ingest" in err
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    try:
        rc = main(common + ["--state-dir", str(tmp_path / "st2"), "--spool", str(tmp_path / "sp2"),
                            "--drain-timeout", "30"])
    finally:
        ing.stop()
    assert rc == 0, capsys.readouterr().err
    sessions = [p for p in (out / "dev1").iterdir() if (p / "frames.jsonl").exists()]
    assert len(sessions) == 1 and len(committed_seqs(out, session=sessions[0].name)) == 8


def test_bad_credentials_are_a_warning_with_the_reason(tmp_path, caplog) -> None:
    with MosquittoBroker(users={"dev1": "right"}) as b:
        stage = build_stage(uplink_cfg(tmp_path, b.url, username="dev1", password="wrong"), "dev1", "s1")
        stage.start()
        stage.apply(make_frame(0))
        wait_for(lambda: "refused" in stage.status()["last_error"], 10, what="the refusal in last_error")
        assert not stage.drain(1.0)
        st, why = stage.status(), stage.undelivered()
        stage.close()
    assert "Bad user name or password" in st["last_error"] or "Not authorized" in st["last_error"], st["last_error"]
    assert st["link"] == "down" and "the broker refused" in why
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "refused" in r.getMessage()]
    assert 1 <= len(warned) <= 2, warned  # once (a protocol fallback may add one), not per retry


def test_command_results_pass_a_window_full_of_unconfirmed_frames(tmp_path, broker) -> None:
    """No ingest: frames fill the end-to-end window and wait; a command's result still goes out."""
    results: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: results.append(m.payload)
    sub.connect(broker.host, broker.port)
    sub.subscribe("crowdcap/v1/dev1/cmd/result", qos=1)
    sub.loop_start()
    stage = build_stage(uplink_cfg(tmp_path, broker.url, confirm_window_mb=0.1, confirm_timeout=60), "dev1", "s1")
    stage.start()
    try:
        for i in range(40):
            stage.apply(make_frame(i))
        wait_for(lambda: stage.status()["sender"].get("confirm_window_waits", 0) > 0, 10, what="a full window")
        stage.publish_command_result({"id": "r1", "ok": True})
        wait_for(lambda: results, 10, what="the command result")
        st = stage.status()
    finally:
        stage.close()
        sub.loop_stop()
        sub.disconnect()
    assert st["records_unconfirmed"] < 40 and st["sender"]["control_past_window"] == 1
