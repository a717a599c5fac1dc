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
    assert stage.drain(30), stage.undelivered()
    st = stage.status()
    stats = ing.stop()
    stage.close()
    sub.loop_stop()
    sub.disconnect()
    _exact(out, 30)
    assert st["delivery"] == "ingest" and st["records_unconfirmed"] == 0 and st["spool_records"] == 0
    assert st["sender"]["records_confirmed"] == 32 and st["sender"]["confirm_latency_ms"]["p99"] > 0
    assert stats["confirm"]["records_confirmed"] >= 32 and stats["confirm"].get("fsync_errors", 0) == 0
    assert acks and all(a["v"] == 1 and len(a["spool"]) == 16 and a["rejected"] == [] for a in acks)
    assert len(acks) <= 15  # batched: a few ack messages, not one per record
    ids = {i for a in acks for lo, hi in a["ranges"] for i in range(lo, hi + 1)}
    assert len(ids) >= 32
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
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)  # a late ingest gets the resends (same message ids)
    try:
        assert stage.drain(30), stage.undelivered()
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
    budget_mb = 100 * frame_bytes / 2**20  # live quota ~60 frames: room for ~0.5 s of confirmation lag
    stage = build_stage(uplink_cfg(tmp_path, broker.url, spool_quota_mb=budget_mb), "dev1", "s1")
    stage.start()
    spool = tmp_path / "spool"
    n, peak = 400, 0
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
    assert len(seqs) == len(set(seqs)) == n - evicted and evicted <= n // 20, st["evictions"]
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
def small_tmpfs(tmp_path: Path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


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
