"""Wire format v1: round trips (hypothesis) and hostile input rejected with a reason."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.frame import TUM_DEFAULT_INTRINSICS, RGBDFrame
from uplink import messages, wire
from uplink.wire import Limits, Message, WireError

idents = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/+#"), min_size=1,
                 max_size=40).filter(lambda s: 0 < len(s.encode()) <= 255)
sections = st.dictionaries(st.integers(1, 255), st.binary(max_size=3000), max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(wire.TYPE_NAMES)), idents, idents, st.integers(0, 2**64 - 1),
       st.integers(-(2**63), 2**63 - 1), st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 255), sections)
def test_message_round_trip(mtype, dev, ses, seq, t_ns, flags, cc, dc, secs) -> None:
    msg = Message(mtype, dev, ses, seq, t_ns, flags, cc, dc, secs)
    assert wire.decode(wire.encode(msg)) == msg


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=20000), st.integers(wire.CHUNK_HEADER_SIZE + 1, 5000),
       st.binary(min_size=16, max_size=16), st.randoms())
def test_chunks_reassemble_in_any_order(data, max_payload, mid, rnd) -> None:
    parts = wire.chunks(data, mid, max_payload)
    assert all(len(p) <= max_payload for p in parts)
    assert len(parts) == wire.chunk_count(len(data), max_payload)
    rnd.shuffle(parts)
    parsed = sorted((wire.parse_chunk(p) for p in parts), key=lambda c: c.index)
    assert {c.message_id for c in parsed} == {mid}
    assert b"".join(c.data for c in parsed) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(data) -> None:
    for fn in (wire.decode, wire.parse_chunk):
        try:
            fn(data)
        except WireError:
            pass


def _frame(seq: int = 7) -> RGBDFrame:
    rng = np.random.default_rng(seq)
    color = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    depth = rng.integers(0, 5000, (480, 640), dtype=np.uint16)
    return RGBDFrame("dev1", "s1", seq, 123, 1.7e9 + seq, color, depth, 1000.0, TUM_DEFAULT_INTRINSICS,
                     pose=np.eye(4), keyframe=True, redaction={"regions": [{"box": [1, 2, 3, 4]}]})


def test_frame_round_trip_depth_bit_exact() -> None:
    f = _frame()
    codec = messages.depth_codec("zstd")
    m = wire.decode(wire.encode(messages.encode_frame(f, codec, 85)))
    d = messages.decode_frame(m)
    assert np.array_equal(d.depth, f.depth)
    assert d.manifest == f.redaction and m.flags & wire.FLAG_KEYFRAME and m.seq == 7
    assert (d.width, d.height) == (640, 480) and d.meta["pose"] == np.eye(4).ravel().tolist()


def test_bad_crc_truncated_version_rejected() -> None:
    data = wire.encode(Message(wire.EVENT, "d", "s", 1, 0, sections={1: b"{}"}))
    with pytest.raises(WireError, match="bad_crc"):
        wire.decode(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(WireError, match="truncated"):
        wire.decode(data[:-1])
    with pytest.raises(WireError, match="bad_version"):
        wire.decode(data[:4] + b"\x09" + data[5:])


def test_huge_chunk_count_and_total_rejected() -> None:
    hdr = struct.pack(">4sBBH16sIII", wire.CHUNK_MAGIC, 1, 0, 0, os.urandom(16), 0, 10**9, 100)
    with pytest.raises(WireError, match="bad_chunk_count"):
        wire.parse_chunk(hdr + b"x" * 10)
    hdr = struct.pack(">4sBBH16sIII", wire.CHUNK_MAGIC, 1, 0, 0, os.urandom(16), 0, 2, 2**32 - 1)
    with pytest.raises(WireError, match="too_large"):
        wire.parse_chunk(hdr + b"x" * 10)


def test_depth_bomb_rejected() -> None:
    import zstandard

    f = _frame()
    m = messages.encode_frame(f, messages.depth_codec("zstd"), 80)
    m.depth_codec = 2  # zstd: 1 GB of zeros claims to be a 640x480 image
    m.sections[wire.SEC_DEPTH] = zstandard.ZstdCompressor().compress(bytes(10**8))
    with pytest.raises(WireError, match="bad_depth"):
        messages.decode_frame(wire.decode(wire.encode(m)))
    m.sections[wire.SEC_META] = wire.json_bytes({"width": 100000, "height": 100000})
    with pytest.raises(WireError, match="too_large"):
        messages.decode_frame(wire.decode(wire.encode(m)), Limits())


def test_historical_flag_flip_keeps_crc_valid() -> None:
    data = wire.encode(Message(wire.FRAME, "d", "s", 1, 0, wire.FLAG_KEYFRAME, sections={1: b"{}"}))
    flipped = wire.set_flags(data, wire.peek_flags(data) | wire.FLAG_HISTORICAL)
    m = wire.decode(flipped)
    assert m.historical and m.flags & wire.FLAG_KEYFRAME


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["raw", "png16", "zstd", "rvl", "delta-zstd"]), st.data())
def test_hostile_depth_bodies_never_crash_the_decoder(name, data) -> None:
    """Every depth codec the ingest may be asked for, fed mutated and random bodies: a WireError or
    a correct-size image, nothing else (no crash, no hang, no oversized allocation)."""
    try:
        codec = messages.depth_codec(name)
    except ValueError:
        pytest.skip(f"codec {name} not available")
    f = _frame(3)
    m = messages.encode_frame(f, codec, 60)
    body = bytearray(m.sections[wire.SEC_DEPTH])
    how = data.draw(st.sampled_from(["random", "flip", "truncate", "extend"]))
    if how == "random":
        body = bytearray(data.draw(st.binary(max_size=5000)))
    elif how == "flip" and body:
        for _ in range(data.draw(st.integers(1, 20))):
            body[data.draw(st.integers(0, len(body) - 1))] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        body = body[: data.draw(st.integers(0, max(0, len(body) - 1)))]
    else:
        body += data.draw(st.binary(min_size=1, max_size=100))
    m.sections[wire.SEC_DEPTH] = bytes(body)
    try:
        d = messages.decode_frame(wire.decode(wire.encode(m)))
    except WireError:
        return
    assert d.depth.shape == (480, 640) and d.depth.dtype == np.uint16
