"""Lossless depth codecs: bit-exact round trips, stable ids, and safe decoding of hostile bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from depth.codec import DepthCodec, codec_by_id, get_codec, names

ALL = names()
WIRE_IDS = {"raw": 0, "png16": 1, "zstd": 2, "rvl": 3, "delta-zstd": 4, "auto": 5}


def kinect_like(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """Smooth surfaces, quantised like a structured-light sensor, with blobs of holes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    d = 1500 + 2 * xx + yy + 300 * np.sin(xx / 50.0) + rng.normal(0, 2, size=(h, w))
    d = np.round(d / 4) * 4
    holes = np.kron(rng.random((h // 8 + 1, w // 8 + 1)) < 0.2, np.ones((8, 8), bool))[:h, :w]
    d[holes] = 0
    return d.astype(np.uint16)


def test_wire_ids_are_stable() -> None:
    assert {n: get_codec(n).codec_id for n in ALL} == WIRE_IDS
    for name, cid in WIRE_IDS.items():
        assert codec_by_id(cid).name == name
        assert isinstance(get_codec(name), DepthCodec)


def test_unknown_codec_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown depth codec 'lz4'.*rvl"):
        get_codec("lz4")
    with pytest.raises(ValueError, match="unknown depth codec id 99"):
        codec_by_id(99)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", ["zeros", "max", "kinect", "noise", "single"])
def test_round_trip_fixed_frames(name: str, kind: str) -> None:
    rng = np.random.default_rng(1)
    frames = {
        "zeros": np.zeros((480, 640), np.uint16),
        "max": np.full((480, 640), 0xFFFF, np.uint16),
        "kinect": kinect_like(),
        "noise": rng.integers(0, 0x10000, size=(120, 160), dtype=np.uint16),
        "single": np.array([[7]], np.uint16),
    }
    depth = frames[kind]
    codec = get_codec(name)
    data = codec.encode(depth)
    out = codec.decode(data, depth.shape[1], depth.shape[0])
    assert out.dtype == np.uint16 and out.shape == depth.shape
    assert np.array_equal(out, depth)


def test_compression_beats_raw_on_kinect_like_depth() -> None:
    depth = kinect_like()
    for name in ("png16", "zstd", "rvl", "delta-zstd", "auto"):
        assert len(get_codec(name).encode(depth)) < depth.nbytes / 2, name


depth_arrays = arrays(
    np.uint16,
    st.tuples(st.integers(1, 40), st.integers(1, 40)),
    elements=st.one_of(st.just(0), st.just(0xFFFF), st.integers(0, 0xFFFF), st.integers(1000, 1010)),
)


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=60, deadline=None)
@given(depth=depth_arrays)
def test_round_trip_property(name: str, depth: np.ndarray) -> None:
    codec = get_codec(name)
    out = codec.decode(codec.encode(depth), depth.shape[1], depth.shape[0])
    assert np.array_equal(out, depth)


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=300), w=st.integers(1, 20), h=st.integers(1, 20))
def test_garbage_is_refused_with_value_error(name: str, data: bytes, w: int, h: int) -> None:
    codec = get_codec(name)
    try:
        out = codec.decode(data, w, h)
    except ValueError:
        return
    assert out.shape == (h, w) and out.dtype == np.uint16  # the rare valid stream must still be in bounds


@pytest.mark.parametrize("name", ALL)
def test_truncated_and_mutated_streams_are_refused(name: str) -> None:
    codec = get_codec(name)
    depth = kinect_like(60, 80)
    data = codec.encode(depth)
    for cut in (1, 2, len(data) // 2, len(data) - 1):
        with pytest.raises(ValueError):
            codec.decode(data[:cut], 80, 60)
    rng = np.random.default_rng(3)
    for _ in range(50):
        mutated = bytearray(data)
        for i in rng.integers(0, len(data), size=3):
            mutated[i] ^= int(rng.integers(1, 256))
        try:
            out = codec.decode(bytes(mutated), 80, 60)
        except ValueError:
            continue
        assert out.shape == (60, 80)


@pytest.mark.parametrize("name", ALL)
def test_wrong_size_is_refused(name: str) -> None:
    codec = get_codec(name)
    data = codec.encode(kinect_like(60, 80))
    with pytest.raises(ValueError):
        codec.decode(data, 81, 60)
    with pytest.raises(ValueError):
        codec.decode(data, 0, 60)


@pytest.mark.parametrize("name", ["zstd", "delta-zstd"])
def test_decompression_bomb_is_refused(name: str) -> None:
    import zstandard

    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(200_000_000))  # 200 MB of zeros, ~6 KB
    with pytest.raises(ValueError, match="expected 9600"):
        get_codec(name).decode(bomb, 80, 60)
    unsized = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(bytes(50_000_000))
    with pytest.raises(ValueError, match="expected 9600"):
        get_codec(name).decode(unsized, 80, 60)


def test_png_claiming_a_huge_size_is_refused_before_decoding() -> None:
    codec = get_codec("png16")
    data = bytearray(codec.encode(np.ones((4, 4), np.uint16)))
    data[16:24] = (100_000).to_bytes(4, "big") * 2
    with pytest.raises(ValueError, match="100000×100000"):
        codec.decode(bytes(data), 4, 4)


@pytest.mark.parametrize("name", ALL)
def test_bad_encoder_input_is_a_clear_error(name: str) -> None:
    codec = get_codec(name)
    with pytest.raises(ValueError, match="uint16"):
        codec.encode(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="uint16"):
        codec.encode(np.zeros((4, 4, 3), np.uint16))


def test_auto_picks_zstd_for_quantised_and_delta_for_noisy_depth() -> None:
    auto = get_codec("auto")
    quantised = (np.round(kinect_like() / 16) * 16).astype(np.uint16)  # coarse steps, like disparity
    rng = np.random.default_rng(5)
    noisy = (quantised.astype(np.int32) + rng.integers(-3, 4, size=quantised.shape)).clip(0, 0xFFFF).astype(np.uint16)
    noisy[quantised == 0] = 0
    for depth, inner in ((quantised, "zstd"), (noisy, "delta-zstd")):
        data = auto.encode(depth)
        assert data[0] == get_codec(inner).codec_id
        assert np.array_equal(auto.decode(data, 640, 480), depth)


def test_auto_refuses_to_nest_itself() -> None:
    inner = get_codec("auto").encode(kinect_like(60, 80))
    with pytest.raises(ValueError, match="inner codec"):
        get_codec("auto").decode(bytes((5,)) + inner, 80, 60)
