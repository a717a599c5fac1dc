"""A bounded ingest (issue 16), measured on a real `crowdcap ingest` process and a real mosquitto:
peak RSS (VmHWM) ≤ 250 MB while draining a 6,000-frame backlog and under a hostile flood (random
bytes, huge declared sizes, wrong CRCs, chunk floods, 20,000 fake device ids, deep JSON); disk for
partials within its cap; a valid frame published during the flood lands within 2 s."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from mqtt_broker import wait_for
from uplink_helpers import committed_seqs, make_frame

from uplink import messages, wire
from uplink.identity import DeviceKey, registry_entry

pytestmark = pytest.mark.slow
RSS_LIMIT_MB = 250


def _vmhwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _start_ingest(tmp_path: Path, broker, registry: Path, **extra) -> subprocess.Popen:
    cfg = tmp_path / "ingest.toml"
    lines = [f'brokers = ["{broker.url}"]', f'out = "{tmp_path / "out"}"', f'registry = "{registry}"',
             "workers = 2", "queue = 32", "receive_maximum = 16"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    cfg.write_text("[ingest]\n" + "\n".join(lines) + "\n")
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from device.cli import main; sys.exit(main())",
                             "--log-level", "INFO", "ingest", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "ingest.log", "ab"))  # noqa: SIM115
    log = tmp_path / "ingest.log"
    wait_for(lambda: b"connected to" in log.read_bytes() or proc.poll() is not None, 30, what="ingest connect")
    assert proc.poll() is None, log.read_text()[-2000:]
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _publisher(broker) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.max_queued_messages_set(0)
    c.max_inflight_messages_set(200)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def _big_frame(seq: int, device: str = "dev1") -> bytes:
    """A 320×240 frame with noisy colour (~150 KB on the wire): what a backlog is made of."""
    f = make_frame(seq, device, "s1", size=(320, 240))
    rng = np.random.default_rng(seq)
    f.color[:] = rng.integers(0, 255, f.color.shape, dtype=np.uint8)
    return wire.encode(messages.encode_frame(f, messages.depth_codec("zstd"), 80))


def _with_seq(message: bytes, seq: int) -> bytes:
    return message[:8] + struct.pack(">Q", seq) + message[16:]  # the body CRC does not cover the header


def _dir_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass  # completed or expired meanwhile
    return total


def _registry(tmp_path: Path, keys: dict[str, DeviceKey]) -> Path:
    path = tmp_path / "devices.toml"
    path.write_text("".join(registry_entry(d, k) for d, k in keys.items()))
    return path


def test_backlog_of_6000_frames_is_drained_within_the_memory_bound(tmp_path, broker) -> None:
    key = DeviceKey.load_or_create(tmp_path / "state")
    reg = _registry(tmp_path, {"dev1": key})
    proc = _start_ingest(tmp_path, broker, reg)  # makes the persistent session, then goes away
    _stop(proc)
    base = _big_frame(0)
    pub = _publisher(broker)
    epoch = os.urandom(8)
    n = 6000
    infos = []
    for seq in range(n):
        for p in wire.chunks(_with_seq(base, seq), epoch + seq.to_bytes(8, "big"), 128 * 1024, key.sign):
            infos.append(pub.publish("crowdcap/v1/dev1/frame", p, qos=1))
        if len(infos) > 400:
            for i in infos:
                i.wait_for_publish(30)
            infos = []
    for i in infos:
        i.wait_for_publish(30)
    pub.disconnect()
    pub.loop_stop()
    backlog_mb = n * len(base) / 1e6
    proc = _start_ingest(tmp_path, broker, reg)
    out = tmp_path / "out"
    try:
        # the broker pushes as fast as the ingest lets it: an unbounded ingest peaks within seconds
        wait_for(lambda: len(committed_seqs(out)) >= 400 or proc.poll() is not None, 120, interval=0.2,
                 what="400 backlog frames stored")
        peak = _vmhwm_mb(proc.pid)
    finally:
        _stop(proc)
    seqs = committed_seqs(out)
    print(f"backlog {n} frames, {backlog_mb:.0f} MB; stored {len(seqs)} before stop; ingest peak RSS {peak:.0f} MB")
    assert len(seqs) == len(set(seqs)) >= 400
    assert peak <= RSS_LIMIT_MB, f"ingest peak RSS {peak:.0f} MB > {RSS_LIMIT_MB} MB under a {backlog_mb:.0f} MB backlog"


def test_hostile_flood_is_bounded_and_a_valid_frame_still_lands_fast(tmp_path, broker) -> None:
    keys = {d: DeviceKey.load_or_create(tmp_path / d) for d in ("dev1", "evil1", "evil2")}
    reg = _registry(tmp_path, keys)
    proc = _start_ingest(tmp_path, broker, reg, partial_max_mb=24, device_partial_max_mb=16, partial_timeout=5.0)
    out = tmp_path / "out"
    pub = _publisher(broker)
    rng = np.random.default_rng(1)
    good = wire.encode(messages.encode_frame(make_frame(1), messages.depth_codec("zstd"), 80))
    bad_crc = bytearray(good)
    bad_crc[-7] ^= 0x55
    deep = messages.encode_json("event", "evil1", "s1", 1, 1.0, {})
    deep.sections[wire.SEC_META] = b"[" * 20_000 + b"]" * 20_000
    deep_bytes = wire.encode(deep)
    chunk_data = bytes(32_000)
    tiny = wire.single_chunk(wire.encode(messages.encode_json("event", "x", "s1", 1, 1.0, {"hi": 1})))

    def huge(i: int) -> bytes:  # claims 64 MiB (or 1 MiB) in 4096 chunks; sends one of them
        total = 64 * 1024 * 1024 if (i // 8) % 2 else 1024 * 1024
        return struct.pack(">4sBBH16sIII", wire.CHUNK_MAGIC, 1, 1, 0, os.urandom(8) + i.to_bytes(8, "big"),
                           i % 4096, 4096, total) + chunk_data

    sent = partial_peak = 0
    landed_in = None
    infos = []
    for i in range(40_000):
        kind = i % 8
        if kind % 2 == 0:  # 20,000 fake device ids
            pub.publish(f"crowdcap/v1/fake{i}/event", tiny, qos=0)
        elif kind == 1:
            infos.append(pub.publish("crowdcap/v1/evil1/frame", rng.bytes(1000), qos=1))
        elif kind == 3:  # chunk flood from registered (compromised) devices
            infos.append(pub.publish(f"crowdcap/v1/evil{1 + i % 2}/frame", huge(i), qos=1))
        elif kind == 5:
            infos.append(pub.publish("crowdcap/v1/dev1/frame", wire.single_chunk(bytes(bad_crc), keys["dev1"].sign),
                                     qos=1))
        else:
            infos.append(pub.publish("crowdcap/v1/evil1/event", wire.single_chunk(deep_bytes, keys["evil1"].sign),
                                     qos=1))
        sent += 1
        if i == 12_000:  # during the flood (12,000 hostile messages sent, 28,000 to come), a real frame
            t0 = time.monotonic()
            pub.publish("crowdcap/v1/dev1/frame", wire.single_chunk(_with_seq(good, 77), keys["dev1"].sign),
                        qos=1).wait_for_publish(10)
            wait_for(lambda: 77 in committed_seqs(out), 30, interval=0.02, what="the valid frame")
            landed_in = time.monotonic() - t0
        if len(infos) >= 500:
            for info in infos:
                info.wait_for_publish(30)
            infos = []
            partial_peak = max(partial_peak, _dir_bytes(out / ".partials"))
    for info in infos:
        info.wait_for_publish(30)
    partial_bytes = max(partial_peak, _dir_bytes(out / ".partials"))
    peak = _vmhwm_mb(proc.pid)
    _stop(proc)
    stats = json.loads(proc.stdout.read().decode().strip().splitlines()[-1])
    print(f"flood: {sent} hostile messages; ingest peak RSS {peak:.0f} MB; partial disk {partial_bytes / 1e6:.1f} MB;"
          f" valid frame landed in {landed_in:.2f} s; rejected {stats['rejected']}")
    assert landed_in is not None  # not starved behind the flood (bounded by wait_for's 30 s)
    # The target (≤ 2 s) is a timing: checked where the machine is not oversubscribed (CI),
    # reported always; on a box running 8 suites at once it measures the neighbours, not the ingest.
    if os.getloadavg()[0] <= (os.cpu_count() or 1):
        assert landed_in <= 2.0, f"valid frame took {landed_in:.2f} s during the flood"
    assert peak <= RSS_LIMIT_MB
    assert partial_bytes <= (24 + 1) * 1024 * 1024  # the cap, plus chunks being written at that moment
    rej = stats["rejected"]
    # the 20,000 fake-id messages go at QoS 0: a broker may drop some for a subscriber that falls behind
    # (mosquitto's per-client queue), so "most of them counted" is the check, not all
    assert rej.get("unknown_device", 0) >= 10_000 and rej.get("bad_crc", 0) > 0 and rej.get("json_too_deep", 0) > 0
    assert rej.get("partial_cap_device", 0) > 0 and rej.get("internal_error", 0) == 0
    assert committed_seqs(out) == [77]
