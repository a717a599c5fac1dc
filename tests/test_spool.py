"""Spool: durable append, ack persistence, torn-tail recovery, priority eviction counted, compaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uplink import spool as sp
from uplink.spool import Spool


def _payload(i: int, n: int = 1000) -> bytes:
    return (f"rec{i:06d}".encode() * (n // 9 + 1))[:n]


def test_append_read_ack_and_reopen(tmp_path) -> None:
    s = Spool(tmp_path, quota_bytes=10**7, fsync="always")
    ids = [s.append(_payload(i), sp.PRIO_FRAME, 1) for i in range(10)]
    assert s.pending_after(0, 100) == ids
    data, rec = s.read(ids[3])
    assert data == _payload(3) and rec.priority == sp.PRIO_FRAME
    for rid in ids[:5]:
        s.ack(rid)
    s.close()
    s = Spool(tmp_path, quota_bytes=10**7)
    assert s.pending_after(0, 100) == ids[5:]
    assert [s.read(r)[0] for r in ids[5:]] == [_payload(i) for i in range(5, 10)]
    new = s.append(b"x", sp.PRIO_FRAME, 1)
    assert new > ids[-1]
    for rid in s.pending_after(0, 100):
        s.ack(rid)
    s.close()
    s = Spool(tmp_path, quota_bytes=10**7)
    assert len(s) == 0 and s.append(b"y", sp.PRIO_FRAME, 1) > new  # ids never repeat


def test_torn_tail_dropped(tmp_path) -> None:
    s = Spool(tmp_path, quota_bytes=10**7, fsync="always")
    for i in range(5):
        s.append(_payload(i), sp.PRIO_FRAME, 1)
    s.close()
    seg = sorted(tmp_path.glob("seg-*.log"))[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as f:  # half of the last record is missing, then garbage
        f.truncate(size - 300)
        f.seek(0, 2)
        f.write(os.urandom(77))
    s = Spool(tmp_path, quota_bytes=10**7)
    assert len(s) == 4 and s.counters["torn_bytes_dropped"] > 0
    assert [s.read(r)[0] for r in s.pending_after(0, 10)] == [_payload(i) for i in range(4)]
    s.append(_payload(99), sp.PRIO_FRAME, 1)
    s.close()
    s = Spool(tmp_path, quota_bytes=10**7)
    assert len(s) == 5 and s.read(s.pending_after(0, 10)[-1])[0] == _payload(99)


def test_corrupt_byte_resyncs_and_counts_the_lost_record(tmp_path) -> None:
    """A byte flipped inside record 4 costs record 4 only: recovery resyncs on record 5's header, and
    the loss is counted (once: a second recovery does not count it again)."""
    s = Spool(tmp_path, quota_bytes=10**7, fsync="always")
    for i in range(40):
        s.append(_payload(i), sp.PRIO_FRAME, 1)
    s.close()
    seg = sorted(tmp_path.glob("seg-*.log"))[-1]
    data = bytearray(seg.read_bytes())
    data[3 * (1000 + 24) + 500] ^= 0xFF  # inside record 4's payload
    seg.write_bytes(bytes(data))
    s = Spool(tmp_path, quota_bytes=10**7)
    assert len(s) == 39
    assert s.stats()["evictions"] == {"corrupt": 1} and s.counters["records_lost_corrupt"] == 1
    assert [s.read(r)[0] for r in s.pending_after(0, 100)] == [_payload(i) for i in range(40) if i != 3]
    s.close()
    s = Spool(tmp_path, quota_bytes=10**7)
    assert len(s) == 39 and s.stats()["evictions"] == {}
    s.close()


def test_corrupt_header_resyncs(tmp_path) -> None:
    s = Spool(tmp_path, quota_bytes=10**7, fsync="always")
    for i in range(10):
        s.append(_payload(i), sp.PRIO_FRAME, 1)
    s.close()
    seg = sorted(tmp_path.glob("seg-*.log"))[-1]
    data = bytearray(seg.read_bytes())
    data[5 * (1000 + 24) + 5] ^= 0x40  # the length field of record 6
    seg.write_bytes(bytes(data))
    s = Spool(tmp_path, quota_bytes=10**7)
    assert len(s) == 9 and s.counters["records_lost_corrupt"] == 1
    s.close()


def test_rotated_segment_without_live_records_is_deleted(tmp_path) -> None:
    """Records acked while their segment was active: the segment goes at rotation, not at compaction."""
    s = Spool(tmp_path, quota_bytes=10**7, fsync="off", segment_bytes=5_000)
    for i in range(200):
        rid = s.append(_payload(i), sp.PRIO_FRAME, 1)
        s.read(rid)
        s.ack(rid)
        assert len(list(tmp_path.glob("seg-*.log"))) <= 1
    assert s.stats()["segments"] <= 1 and s.stats().get("compactions", 0) == 0
    s.close()


def test_confirm_ranges_and_reject(tmp_path) -> None:
    s = Spool(tmp_path, quota_bytes=10**7, fsync="off")
    ids = [s.append(_payload(i), sp.PRIO_FRAME, 1) for i in range(10)]
    assert s.confirm([(ids[0], ids[3]), (ids[5], ids[5]), (10**9, 10**9 + 5)]) == ids[:4] + [ids[5]]
    assert s.confirm([(ids[0], ids[3])]) == []  # idempotent
    assert s.reject(ids[6], "bad_crc") and not s.reject(ids[6], "bad_crc")
    assert s.stats()["evictions"] == {"rejected_bad_crc": 1}
    s.close()
    s = Spool(tmp_path, quota_bytes=10**7)  # confirmations are in the ack log: restart-safe
    assert s.pending_after(0, 100) == [ids[4]] + ids[7:]
    s.close()


def test_priority_eviction_counted(tmp_path) -> None:
    s = Spool(tmp_path, quota_bytes=10_000, fsync="off")
    ctl = s.append(_payload(0), sp.PRIO_CONTROL, 5)
    key = s.append(_payload(1), sp.PRIO_KEYFRAME, 1)
    frames = [s.append(_payload(i), sp.PRIO_FRAME, 1) for i in range(2, 10)]
    assert s.live_bytes == 10_000
    s.append(_payload(10), sp.PRIO_FRAME, 1)  # evicts the oldest plain frame
    assert s.evictions == {"quota_frame": 1} and frames[0] not in s.pending_after(0, 100)
    s.append(_payload(11, 3000), sp.PRIO_CLOUD, 2)  # evicts 3 plain frames, never the control record
    assert s.evictions["quota_frame"] == 4 and ctl in s.pending_after(0, 100)
    # plain frames cannot push out a keyframe or control record: the newcomer is refused, counted
    for i in range(12, 40):
        s.append(_payload(i), sp.PRIO_FRAME, 1)
    assert key in s.pending_after(0, 100) and ctl in s.pending_after(0, 100)
    assert s.live_bytes <= 10_000
    appended = s.counters["appended"]
    total = 40
    assert appended + s.evictions.get("quota_refused_frame", 0) == total
    assert len(s) + sum(v for k, v in s.evictions.items() if not k.startswith("quota_refused")) == appended


def test_inflight_not_evicted(tmp_path) -> None:
    s = Spool(tmp_path, quota_bytes=2_000, fsync="off")
    a = s.append(_payload(0), sp.PRIO_FRAME, 1)
    s.append(_payload(1), sp.PRIO_FRAME, 1)
    s.read(a)  # in flight
    s.append(_payload(2), sp.PRIO_FRAME, 1)
    assert a in s.pending_after(0, 10)


def test_compaction_keeps_disk_near_quota(tmp_path) -> None:
    s = Spool(tmp_path, quota_bytes=200_000, fsync="off", segment_bytes=20_000)
    keep = []
    for i in range(2000):
        prio = sp.PRIO_CONTROL if i % 10 == 0 else sp.PRIO_FRAME
        rid = s.append(_payload(i), prio, 1)
        if prio == sp.PRIO_CONTROL:
            keep.append((rid, i))
    st = s.stats()
    assert st["disk_bytes"] <= 1.5 * 200_000 + 2 * 20_000 + 2000 and st.get("compactions", 0) > 0
    live = set(s.pending_after(0, 10**6))
    kept = [(rid, i) for rid, i in keep if rid in live]
    assert kept and all(s.read(rid)[0] == _payload(i) for rid, i in kept)
    s.close()
    s2 = Spool(tmp_path, quota_bytes=200_000)
    assert set(s2.pending_after(0, 10**6)) == live


def test_sigkill_during_appends_recovers_prefix(tmp_path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from uplink.spool import Spool
        s = Spool({str(tmp_path)!r}, quota_bytes=10**9, fsync="always")
        i = 0
        while True:
            s.append((b"%08d" % i) * 5000, 1, 1)
            i += 1
            if i == 20:
                print("go", flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=os.getcwd())
    assert p.stdout.readline().strip() == b"go"
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    s = Spool(tmp_path, quota_bytes=10**9)
    ids = s.pending_after(0, 10**6)
    assert len(ids) >= 20
    assert [s.read(r)[0] for r in ids] == [(b"%08d" % i) * 5000 for i in range(len(ids))]


@pytest.mark.parametrize("bad", ["sometimes"])
def test_bad_fsync_policy(tmp_path, bad) -> None:
    with pytest.raises(ValueError, match="fsync"):
        Spool(tmp_path, fsync=bad)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["append", "ack", "reopen", "tear"]), st.integers(1, 3000)),
                max_size=40))
def test_model_based_spool(tmp_path_factory, ops) -> None:
    """Random appends, acks, reopens and torn tails: the spool always holds exactly the model's records
    (minus a torn last record), in order, byte-exact."""
    d = tmp_path_factory.mktemp("spool")
    s = Spool(d, quota_bytes=10**9, fsync="off", segment_bytes=8192)
    model: dict[int, bytes] = {}
    for op, n in ops:
        if op == "append":
            data = os.urandom(n)
            model[s.append(data, sp.PRIO_FRAME, 1)] = data
        elif op == "ack" and model:
            rid = sorted(model)[n % len(model)]
            s.ack(rid)
            del model[rid]
        elif op == "reopen":
            s.close()
            s = Spool(d, quota_bytes=10**9, fsync="off", segment_bytes=8192)
        elif op == "tear" and model:
            s.close()
            seg = sorted(d.glob("seg-*.log"))[-1]
            size = seg.stat().st_size
            with open(seg, "r+b") as f:  # the newest record of the newest segment loses its last byte
                f.truncate(size - 1)
            s = Spool(d, quota_bytes=10**9, fsync="off", segment_bytes=8192)
            lost = set(model) - set(s.pending_after(0, 10**6))
            assert len(lost) <= 1  # only the torn record, never more
            for rid in lost:
                del model[rid]
        assert s.pending_after(0, 10**6) == sorted(model)
    for rid, data in model.items():
        assert s.read(rid)[0] == data
    s.close()


def test_short_write_leaves_no_hole_for_later_records(tmp_path) -> None:
    """A write cut short (disk full; here a real RLIMIT_FSIZE) must not shift the records after it:
    they are read back intact now and survive a restart (they used to sit behind a torn record)."""
    import resource

    s = Spool(tmp_path, quota_bytes=10**8, fsync="off", segment_bytes=10**8)
    ids = [s.append(_payload(i, 300_000), sp.PRIO_FRAME, 1) for i in range(3)]
    seg_file = next(tmp_path.glob("seg-*.log"))
    limit = seg_file.stat().st_size + 100_000
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises((sp.SpoolError, OSError)):
            s.append(_payload(3, 300_000), sp.PRIO_FRAME, 1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    ids.append(s.append(_payload(4, 300_000), sp.PRIO_FRAME, 1))
    assert [s.read(rid)[0] for rid in ids] == [_payload(i, 300_000) for i in (0, 1, 2, 4)]
    assert s.stats()["write_errors"] == 1
    s.close()
    s2 = Spool(tmp_path, quota_bytes=10**8, fsync="off", segment_bytes=10**8)
    assert s2.pending_after(0, 100) == ids and s2.read(ids[-1])[0] == _payload(4, 300_000)
    assert s2.stats().get("torn_bytes_dropped", 0) == 0
    s2.close()


def test_acked_then_torn_record_id_is_not_reused(tmp_path) -> None:
    """Power cut: a record's ack reached the disk but its bytes did not (torn tail). The next record
    must get a new id, or the old ack makes it look delivered at the next restart (silently lost)."""
    s = Spool(tmp_path, quota_bytes=10**7, fsync="off")
    first = s.append(_payload(0), sp.PRIO_FRAME, 1)
    second = s.append(_payload(1), sp.PRIO_FRAME, 1)
    s.ack(second)
    s.close()
    seg = sorted(tmp_path.glob("seg-*.log"))[-1]
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 1)
    s = Spool(tmp_path, quota_bytes=10**7, fsync="off")
    third = s.append(_payload(2), sp.PRIO_FRAME, 1)
    assert third > second
    s.close()
    s = Spool(tmp_path, quota_bytes=10**7, fsync="off")
    assert s.pending_after(0, 10) == [first, third]
    s.close()
