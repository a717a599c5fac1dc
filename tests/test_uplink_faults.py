"""Fault tests with a real mosquitto, each ending in exact counts at the ingest folder:
0 frames lost, 0 duplicates — across broker restart, device SIGKILL, ingest SIGKILL and a link cut."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mqtt_broker import MosquittoBroker
from uplink_helpers import (
    Feeder,
    IngestThread,
    TcpProxy,
    committed_seqs,
    make_frame,
    uplink_cfg,
    wait_for_frames,
)

from uplink import build_stage, messages, wire

HERE = Path(__file__).parent


def _exact(out: Path, n: int) -> None:
    seqs = committed_seqs(out)
    dups = [s for s, c in Counter(seqs).items() if c > 1]
    missing = sorted(set(range(n)) - set(seqs))
    assert not dups and not missing, f"duplicates {dups[:10]}, missing {missing[:10]} of {n}"
    assert len(seqs) == n


@pytest.fixture
def pbroker():
    """A broker with persistence, as in production: sessions and queues survive a restart."""
    b = MosquittoBroker(persistence=True)
    b.start()
    yield b
    b.close()


def test_broker_restart_mid_stream(tmp_path, pbroker) -> None:
    out = tmp_path / "out"
    ing = IngestThread(pbroker.url, out)
    stage = build_stage(uplink_cfg(tmp_path, pbroker.url), "dev1", "s1")
    stage.start()
    n = 240
    feed = Feeder(stage, n, fps=80)
    feed.wait_accepted(60)
    pbroker.restart()  # SIGTERM: mosquitto saves its sessions; the stream keeps going into the spool
    feed.wait_accepted(150)
    pbroker.restart()
    feed.join()
    assert stage.drain(30)
    wait_for_frames(out, n, 30)
    stats = ing.stop()
    st = stage.status()
    stage.close()
    _exact(out, n)
    assert st["sender"]["connects"] >= 3 and stats["rejected_total"] == 0
    assert st["evictions"] == {}


def test_device_sigkill_and_restart(tmp_path, broker) -> None:
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    spool = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, str(HERE / "uplink_device.py"), str(spool), broker.url]
    p = subprocess.Popen(cmd + ["0", "1000", "60"], stdout=subprocess.PIPE, text=True, env=env)
    accepted = -1
    for line in p.stdout:
        if line.startswith("accepted"):
            accepted = int(line.split()[1])
            if accepted >= 80:
                break
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    p.stdout.close()
    total = 160
    # Restart with the same spool: continues after the last frame it reported as accepted (the one
    # it accepted but could not report is sent twice: the ingest must dedupe it).
    p2 = subprocess.run(cmd + [str(accepted + 1), str(total - accepted - 1), "200"], capture_output=True,
                        text=True, env=env, timeout=90)
    assert p2.returncode == 0, p2.stderr[-2000:]
    assert "drained True" in p2.stdout
    wait_for_frames(out, total, 30)
    stats = ing.stop()
    _exact(out, total)
    assert stats["rejected_total"] == 0


def test_ingest_sigkill_and_restart(tmp_path, broker) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "device.cli", "ingest", "--broker", broker.url, "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    # the first run creates the persistent session; wait until it is subscribed by seeing frames land
    stage = build_stage(uplink_cfg(tmp_path, broker.url, confirm_timeout=1.0), "dev1", "s1")
    stage.start()
    n = 200
    events = out / "dev1" / "s1" / "events.jsonl"
    deadline = time.monotonic() + 20
    while not events.exists():  # probe until the ingest process has subscribed
        assert time.monotonic() < deadline and first.poll() is None, "ingest did not come up"
        stage.publish("event", {"probe": True})
        time.sleep(0.2)
    feed = Feeder(stage, n, fps=100)
    try:
        wait_for_frames(out, 40, 20)
        assert committed_seqs(out), first.stderr.read1(4000) if first.poll() is not None else "no frames"
        first.send_signal(signal.SIGKILL)  # right after it received frames: some stored, not confirmed
        first.wait(10)
        feed.join()
        assert not stage.drain(1.0)  # nobody confirms: the device keeps what is unconfirmed
        assert stage.status()["records_unconfirmed"] + stage.status()["records_unsent"] > 0
    finally:
        first.kill()
    second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        # the broker queued for the persistent session; what was neither is resent after confirm_timeout
        assert stage.drain(60), stage.undelivered()
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    stage.close()
    assert second.returncode == 0, err[-2000:]
    _exact(out, n)
    assert (out / "dev1" / "s1" / "report.html").exists()


def test_network_cut_short(tmp_path, broker) -> None:
    network_cut(tmp_path, broker, cut_seconds=5.0)


def network_cut(tmp_path: Path, broker: MosquittoBroker, cut_seconds: float) -> None:
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)  # the backend side is not cut
    proxy = TcpProxy(broker.host, broker.port)
    stage = build_stage(uplink_cfg(tmp_path, proxy.url, keepalive=5), "dev1", "s1")
    stage.start()
    fps = 30.0
    n = int(fps * (cut_seconds + 4))
    feed = Feeder(stage, n, fps=fps)
    feed.wait_accepted(int(fps))
    proxy.cut()
    t_cut = time.monotonic()
    while time.monotonic() - t_cut < cut_seconds:
        assert feed.error is None
        time.sleep(0.1)  # the cut lasts a wall-clock duration by definition
    during = stage.status()
    proxy.heal()
    feed.join(cut_seconds + 30)
    assert stage.drain(60)
    wait_for_frames(out, n, 30)
    stats = ing.stop()
    st = stage.status()
    stage.close()
    proxy.close()
    _exact(out, n)
    assert during["spool_records"] > fps * cut_seconds * 0.5  # the cut really held frames back
    assert st["sender"]["connects"] >= 2 and st["evictions"] == {} and stats["rejected_total"] == 0
    assert stats.get("historical", 0) > 0


def test_quota_overflow_evicted_equals_gap(tmp_path, broker) -> None:
    frame_bytes = len(wire.encode(messages.encode_frame(make_frame(1), messages.depth_codec("delta-zstd"), 85)))
    cfg = uplink_cfg(tmp_path, spool_quota_mb=30 * frame_bytes / 2**20)  # room for ~30 frames
    stage = build_stage(cfg, "dev1", "s1")
    n = 100  # keyframes every 10th: 10 keyframes, 90 plain frames
    for i in range(n):
        stage.apply(make_frame(i))
    ev = stage.status()["evictions"]
    stage.close()
    assert set(ev) == {"quota_frame"}, ev  # only plain frames were evicted
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    cfg.broker = broker.url
    stage = build_stage(cfg, "dev1", "s1")
    stage.start()
    assert stage.drain(30)
    stage.close()
    wait_for_frames(out, n - ev["quota_frame"], 20)
    ing.stop()
    seqs = committed_seqs(out)
    assert len(seqs) == len(set(seqs))
    assert n - len(seqs) == ev["quota_frame"]  # evicted count == gap
    assert {s for s in range(0, n, 10)} <= set(seqs)  # every keyframe survived
