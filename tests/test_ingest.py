"""Ingest: hostile payloads are counted and survived; shared subscriptions split load with no duplicates;
a torn commit log is repaired at startup."""

from __future__ import annotations

import os
import struct

import numpy as np
import paho.mqtt.client as mqtt
import zstandard
from uplink_helpers import IngestThread, committed_seqs, make_frame, uplink_cfg, wait_for_frames

from uplink import build_stage, messages, wire
from uplink.backend.ingest import Ingest


def _publisher(broker) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def _frame_message(seq: int) -> bytes:
    return wire.encode(messages.encode_frame(make_frame(seq), messages.depth_codec("delta-zstd"), 80))


def test_garbage_counted_and_survived(tmp_path, broker) -> None:
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    pub = _publisher(broker)
    t = "crowdcap/v1/dev1/frame"
    rng = np.random.default_rng(0)
    good = _frame_message(1)
    bad_crc = bytearray(good)
    bad_crc[-5] ^= 0xFF
    bomb = messages.encode_frame(make_frame(2), messages.depth_codec("zstd"), 80)
    bomb.sections[wire.SEC_DEPTH] = zstandard.ZstdCompressor().compress(bytes(200_000_000))
    wrong_version = bytearray(good)
    wrong_version[4] = 9
    evil = [
        rng.bytes(1000),  # random bytes
        b"",  # empty
        struct.pack(">4sBBH16sIII", wire.CHUNK_MAGIC, 1, 0, 0, os.urandom(16), 0, 10**9, 1000) + b"x" * 100,
        wire.chunks(good, os.urandom(16), 4096)[0][:-10],  # a truncated first chunk (then nothing)
        wire.single_chunk(bytes(bad_crc)),
        wire.single_chunk(bytes(wrong_version)),
        wire.single_chunk(wire.encode(bomb)),
        wire.single_chunk(good[:-100]),  # truncated message
    ]
    for p in evil:
        pub.publish(t, p, qos=1).wait_for_publish(5)
    # a device id that would escape the output folder
    pub.publish("crowdcap/v1/../frame", wire.single_chunk(good), qos=1).wait_for_publish(5)
    pub.publish("crowdcap/v1/dev2/frame", wire.single_chunk(good), qos=1).wait_for_publish(5)  # topic mismatch
    for p in wire.chunks(_frame_message(3), os.urandom(16), 4096):  # and a good one still goes through
        pub.publish(t, p, qos=1).wait_for_publish(5)
    seqs = wait_for_frames(out, 1, 10)
    pub.disconnect()
    pub.loop_stop()
    stats = ing.stop()
    assert seqs == [3]
    rej = stats["rejected"]
    assert rej.get("bad_crc") == 1 and rej.get("bad_chunk_count") == 1 and rej.get("bad_version") == 1
    assert rej.get("bad_depth") == 1 and rej.get("bad_ident") == 1 and rej.get("topic_mismatch") == 1
    assert rej.get("truncated", 0) + rej.get("bad_magic", 0) >= 3
    assert stats["rejected_total"] == 9  # everything but the truncated chunk, which waits as a partial
    assert stats["partials"] == 1  # the truncated multi-chunk message waits for its timeout
    assert not (out / "..").joinpath("frame").exists() and sorted(p.name for p in out.iterdir()) == [".partials", "dev1"]


def test_partials_expire(tmp_path) -> None:
    ing = Ingest("mqtt://127.0.0.1:1", tmp_path, partial_timeout=0.0)
    for p in wire.chunks(_frame_message(1), os.urandom(16), 4096)[:2]:
        assert ing.handle("crowdcap/v1/dev1/frame", p) == "partial"
    assert ing.reassembler.partials() == 1
    ing.reassembler.expire()
    assert ing.reassembler.partials() == 0 and ing.reassembler.counters["partial_expired"] == 1


def test_torn_commit_log_repaired_and_deduped(tmp_path) -> None:
    ing = Ingest("mqtt://127.0.0.1:1", tmp_path)
    for seq in (0, 1):
        assert ing.handle("crowdcap/v1/dev1/frame", wire.single_chunk(_frame_message(seq))) == "frame"
    log = tmp_path / "dev1" / "s1" / "frames.jsonl"
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 40])  # crash while appending seq 1's line
    for s in list(ing.sink._sessions.values()):  # the process died: the kernel drops its session locks
        s.close()
    ing2 = Ingest("mqtt://127.0.0.1:1", tmp_path)
    ing2._recover()
    for seq in (0, 1, 1):
        ing2.handle("crowdcap/v1/dev1/frame", wire.single_chunk(_frame_message(seq)))
    assert committed_seqs(tmp_path) == [0, 1]
    assert ing2.stats()["duplicate"] == 2


def test_shared_subscription_workers_split_without_duplicates(tmp_path, broker) -> None:
    out = tmp_path / "out"
    workers = [IngestThread(broker.url, out, share_group="g1") for _ in range(2)]
    stage = build_stage(uplink_cfg(tmp_path, broker.url, max_payload=4096), "dev1", "s1")
    stage.start()
    n = 120
    for i in range(n):
        stage.apply(make_frame(i))
    assert stage.drain(30)
    wait_for_frames(out, n, 30)
    stats = [w.stop() for w in workers]
    stage.close()
    seqs = committed_seqs(out)
    assert sorted(seqs) == list(range(n))
    # both workers did real work (chunks of one message may land on either worker)
    assert all(s.get("frame", 0) + s.get("chunks_buffered", 0) > 0 for s in stats)
    assert sum(s["rejected_total"] for s in stats) == 0


def test_storage_error_is_retried_not_lost(tmp_path, broker) -> None:
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    ing.ingest.retry_delay = 0.3
    real_write = ing.ingest.sink.write
    failures = [3]

    def flaky_write(*args, **kw):
        if failures[0] > 0:
            failures[0] -= 1
            raise OSError(28, "No space left on device")
        return real_write(*args, **kw)

    ing.ingest.sink.write = flaky_write
    stage = build_stage(uplink_cfg(tmp_path, broker.url), "dev1", "s1")
    stage.start()
    for i in range(10):
        stage.apply(make_frame(i))
    assert stage.drain(20)
    seqs = wait_for_frames(out, 10, 20)
    stats = ing.stop()
    stage.close()
    assert sorted(seqs) == list(range(10))
    assert stats["storage_errors"] == 3 and stats["redelivery_reconnects"] >= 1 and stats["rejected_total"] == 0


def test_failed_commit_line_is_not_taken_for_a_duplicate(tmp_path, monkeypatch) -> None:
    """Disk full while appending the commit line: the redelivered frame must be committed, not
    acknowledged as a duplicate of a frame that was never committed."""
    from uplink.backend import sink

    real_append = sink._append_line
    failures = [1]

    def flaky_append(path, obj):
        if path.name == "frames.jsonl" and failures[0] > 0:
            failures[0] -= 1
            raise OSError(28, "No space left on device")
        real_append(path, obj)

    monkeypatch.setattr(sink, "_append_line", flaky_append)
    ing = Ingest("mqtt://127.0.0.1:1", tmp_path)
    payload = wire.single_chunk(_frame_message(7))
    assert ing.handle("crowdcap/v1/dev1/frame", payload) == "retry"
    assert ing.handle("crowdcap/v1/dev1/frame", payload) == "frame"  # the broker's redelivery
    assert committed_seqs(tmp_path) == [7]
    ing2 = Ingest("mqtt://127.0.0.1:1", tmp_path)  # and after a restart it is a duplicate
    ing2._recover()
    assert ing2.handle("crowdcap/v1/dev1/frame", payload) == "duplicate"


def test_resent_events_and_telemetry_are_deduped(tmp_path) -> None:
    """Events, telemetry and command results are spooled, so a reconnect re-sends them: like frames,
    each (session, kind, seq) is stored once, across restarts too."""
    def msg(kind: str, seq: int) -> bytes:
        return wire.single_chunk(wire.encode(messages.encode_json(kind, "dev1", "s1", seq, 1.0, {"n": seq})))

    ing = Ingest("mqtt://127.0.0.1:1", tmp_path)
    topics = {"event": "event", "telemetry": "telemetry", "cmd_result": "cmd/result"}
    for kind in ("event", "telemetry", "cmd_result"):
        assert ing.handle(f"crowdcap/v1/dev1/{topics[kind]}", msg(kind, 1)) == kind
        assert ing.handle(f"crowdcap/v1/dev1/{topics[kind]}", msg(kind, 1)) == "duplicate"
    assert ing.handle("crowdcap/v1/dev1/event", msg("event", 2)) == "event"
    ing2 = Ingest("mqtt://127.0.0.1:1", tmp_path)
    ing2._recover()
    assert ing2.handle("crowdcap/v1/dev1/event", msg("event", 2)) == "duplicate"
    assert ing2.handle("crowdcap/v1/dev1/telemetry", msg("telemetry", 1)) == "duplicate"
    ses = tmp_path / "dev1" / "s1"
    assert len((ses / "events.jsonl").read_text().splitlines()) == 3  # event 1, cmd_result 1, event 2
    assert len((ses / "telemetry.jsonl").read_text().splitlines()) == 1


def test_repeating_storage_error_is_not_a_log_line_per_message(tmp_path, caplog) -> None:
    ing = Ingest("mqtt://127.0.0.1:1", tmp_path)

    def full(*args, **kw):
        raise OSError(28, "No space left on device")

    ing.sink.write = full
    payload = wire.single_chunk(_frame_message(1))
    with caplog.at_level("ERROR", logger="uplink.backend.ingest"):
        for _ in range(50):
            assert ing.handle("crowdcap/v1/dev1/frame", payload) == "retry"
    assert ing.stats()["storage_errors"] == 50
    assert len([r for r in caplog.records if "storing a message failed" in r.getMessage()]) == 3


def test_read_error_while_assembling_is_retried_not_lost(tmp_path, monkeypatch) -> None:
    """An I/O error reading back a message's chunks used to delete them as "corrupt" although every
    chunk had been acknowledged: the message was gone. Now the last chunk is retried."""
    from pathlib import Path

    ing = Ingest("mqtt://127.0.0.1:1", tmp_path)
    chunks = wire.chunks(_frame_message(5), os.urandom(16), 4 * 1024)
    assert len(chunks) > 2
    for c in chunks[:-1]:
        assert ing.handle("crowdcap/v1/dev1/frame", c) == "partial"
    real_read = Path.read_bytes
    failures = [1]

    def flaky_read(self):
        if self.parent.name.startswith(".assembling-") and failures[0] > 0:
            failures[0] -= 1
            raise OSError(5, "Input/output error")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", flaky_read)
    assert ing.handle("crowdcap/v1/dev1/frame", chunks[-1]) == "retry"
    assert ing.handle("crowdcap/v1/dev1/frame", chunks[-1]) == "frame"  # the broker's redelivery
    assert committed_seqs(tmp_path) == [5]
    assert ing.stats()["reassembly"].get("partial_corrupt", 0) == 0
