"""The ingest's TUM depth PNGs (uplink/backend/tum_depth.py): bit-exact ×5000 values through real
PNG readers, wire PNGs passed through only when valid, garbage refused and counted, and acks only
after the durable write."""

from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from uplink_helpers import make_frame

from capture.tum import TUM_DEPTH_SCALE, to_tum_depth
from uplink import messages, wire
from uplink.backend import confirm as confirm_mod
from uplink.backend import tum_depth
from uplink.backend.ingest import Ingest
from uplink.backend.tum_depth import encode_png16, to_tum, tum_depth_png

ALL_VALUES = np.arange(65536, dtype=np.uint32).astype(np.uint16).reshape(256, 256)


def _read_cv2(png: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.dtype == np.uint16
    return img


def _depths() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:480, 0:640]
    smooth = (1200 + 2 * xx + yy + rng.integers(0, 5, (480, 640))).astype(np.uint16)  # continuous, noisy
    quant = (np.round(smooth / 40) * 40).astype(np.uint16)  # Kinect-like steps ...
    quant[rng.random((480, 640)) < 0.2] = 0  # ... and holes
    odd = rng.integers(0, 65536, (7, 13), dtype=np.uint16)  # odd width, full range, random
    return {"smooth": smooth, "quantised": quant, "odd": odd, "extremes": ALL_VALUES,
            "zeros": np.zeros((3, 5), np.uint16), "max": np.full((4, 4), 65535, np.uint16),
            "one_pixel": np.array([[4242]], np.uint16)}


@pytest.mark.parametrize("scale", [1000.0, 5000.0, 2500.0, 1.0, 999.0, 5000.0 / 3, 10000.0, 65535.0])
def test_scaling_matches_capture_tum_on_every_uint16(scale: float) -> None:
    assert np.array_equal(to_tum(ALL_VALUES, scale), to_tum_depth(ALL_VALUES, scale))


@pytest.mark.parametrize("name", list(_depths()))
def test_fast_png_decodes_bit_exactly_in_libpng_and_open3d(name: str, tmp_path) -> None:
    import open3d as o3d

    depth = _depths()[name]
    assert tum_depth.fast_available()  # the declared dependency is installed: the fast path is tested
    png = encode_png16(depth, "fast")
    w, h, bits, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", png[16:29])
    assert (w, h, bits, colour, interlace) == (depth.shape[1], depth.shape[0], 16, 0, 0)
    assert np.array_equal(_read_cv2(png), depth)
    path = tmp_path / "d.png"
    path.write_bytes(png)
    assert np.array_equal(np.asarray(o3d.io.read_image(str(path))), depth)
    from PIL import Image  # a third reader, its own zlib (Pillow ships with scikit-image)

    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im).astype(np.uint16), depth)
    assert np.array_equal(_read_cv2(encode_png16(depth, "opencv")), depth)  # the old path: same pixels


def test_fast_png_is_smaller_than_opencv_on_sensor_like_depth() -> None:
    d = _depths()
    assert len(encode_png16(d["quantised"], "fast")) < len(encode_png16(d["quantised"], "opencv"))
    assert len(encode_png16(d["smooth"], "fast")) <= 1.1 * len(encode_png16(d["smooth"], "opencv"))


def test_without_isal_the_opencv_encoder_writes_the_same_pixels(monkeypatch) -> None:
    monkeypatch.setattr(tum_depth, "_isal", None)
    depth = _depths()["smooth"]
    png, how = tum_depth_png(depth, 1000.0)
    assert how == "opencv" and np.array_equal(_read_cv2(png), to_tum_depth(depth, 1000.0))


def test_refuses_what_is_not_a_depth_image() -> None:
    for bad in (np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.uint16), np.zeros((0, 4), np.uint16)):
        with pytest.raises(ValueError, match="depth"):
            encode_png16(bad)


# ---- through the ingest ------------------------------------------------------------------------------


def _ingest(tmp_path, **kw) -> Ingest:
    return Ingest("mqtt://127.0.0.1:1", tmp_path / "out", **kw)


def _send(ing: Ingest, msg: wire.Message) -> str:
    return ing.handle(f"crowdcap/v1/{msg.device_id}/frame", wire.single_chunk(wire.encode(msg)))


def _frame_msg(seq: int, codec: str, scale: float = 1000.0) -> tuple[wire.Message, np.ndarray]:
    f = make_frame(seq, size=(160, 120))
    if scale != 1000.0:
        f = f.replace(depth_scale=scale)
    return messages.encode_frame(f, messages.depth_codec(codec), 80), f.depth


def _written(ing: Ingest, seq: int):  # noqa: ANN202
    return ing.out / "dev1" / "s1" / "depth" / f"{seq:08d}.png"


@pytest.mark.parametrize("codec", ["delta-zstd", "zstd", "rvl", "raw", "auto", "png16"])
def test_ingest_writes_tum_values_whatever_the_wire_codec(codec: str, tmp_path) -> None:
    ing = _ingest(tmp_path)
    msg, depth = _frame_msg(1, codec)
    assert _send(ing, msg) == "frame"
    assert np.array_equal(_read_cv2(_written(ing, 1).read_bytes()), to_tum_depth(depth, 1000.0))
    assert ing.stats()["sink"] == {"depth_png_fast": 1}


def test_wire_png_at_tum_scale_is_written_as_received(tmp_path) -> None:
    ing = _ingest(tmp_path)
    msg, depth = _frame_msg(1, "png16", TUM_DEPTH_SCALE)
    assert _send(ing, msg) == "frame"
    assert _written(ing, 1).read_bytes() == msg.sections[wire.SEC_DEPTH]
    assert np.array_equal(_read_cv2(_written(ing, 1).read_bytes()), depth)
    assert ing.stats()["sink"] == {"depth_png_passthrough": 1}


def test_wire_png_with_trailing_bytes_is_reencoded_not_passed_through(tmp_path) -> None:
    ing = _ingest(tmp_path)
    msg, depth = _frame_msg(1, "png16", TUM_DEPTH_SCALE)
    msg.sections[wire.SEC_DEPTH] += b"hidden bytes after IEND"
    assert _send(ing, msg) == "frame"
    data = _written(ing, 1).read_bytes()
    assert b"hidden" not in data and np.array_equal(_read_cv2(data), depth)
    assert ing.stats()["sink"] == {"depth_png_fast": 1}


def _corrupt_idat(png: bytes) -> bytes:
    """The same PNG with its image data replaced by garbage (valid chunk CRC, so only inflate fails)."""
    at = png.index(b"IDAT") - 4
    n = struct.unpack(">I", png[at:at + 4])[0]
    junk = os.urandom(n)
    return png[:at] + png[at:at + 8] + junk + struct.pack(">I", zlib.crc32(junk, zlib.crc32(b"IDAT"))) + png[at + 12 + n:]


@pytest.mark.parametrize("scale", [TUM_DEPTH_SCALE, 1000.0])
def test_garbage_wire_png_is_refused_counted_and_not_written(scale: float, tmp_path) -> None:
    ing = _ingest(tmp_path)
    msg, _ = _frame_msg(1, "png16", scale)
    msg.sections[wire.SEC_DEPTH] = _corrupt_idat(msg.sections[wire.SEC_DEPTH])
    assert _send(ing, msg) == "rejected"
    assert ing.rejected["bad_depth"] == 1
    root = ing.out / "dev1" / "s1"
    assert not _written(ing, 1).exists() and not (root / "frames.jsonl").exists()
    assert not list((root / "depth").iterdir()) and not list((root / "rgb").iterdir())
    good, _ = _frame_msg(2, "png16", scale)  # the ingest goes on
    assert _send(ing, good) == "frame" and _written(ing, 2).exists()


def test_old_writer_is_kept_for_benches(tmp_path) -> None:
    from uplink.backend.config import IngestConfig

    cfg = IngestConfig(brokers=["mqtt://127.0.0.1:1"], out=str(tmp_path / "out"), depth_png="opencv")
    ing = Ingest.from_config(cfg)
    msg, depth = _frame_msg(1, "delta-zstd")
    assert _send(ing, msg) == "frame"
    assert np.array_equal(_read_cv2(_written(ing, 1).read_bytes()), to_tum_depth(depth, 1000.0))
    assert ing.stats()["sink"] == {"depth_png_opencv": 1}


def test_frames_are_confirmed_only_after_their_files_are_durable(tmp_path, monkeypatch) -> None:
    """The ack is published after the sync that covers the depth PNG; a failed sync acks nothing."""
    events: list[str] = []
    real_sync, real_fsync = confirm_mod._sync_filesystem, confirm_mod._fsync_path
    fail = {"on": False}

    def sync(path):  # noqa: ANN001, ANN202
        if fail["on"]:
            raise OSError(5, "I/O error")
        events.append("sync")
        return real_sync(path)

    def fsync(path, flags):  # noqa: ANN001, ANN202
        if fail["on"]:
            raise OSError(5, "I/O error")
        events.append(f"fsync:{os.path.basename(path)}")
        return real_fsync(path, flags)

    monkeypatch.setattr(confirm_mod, "_sync_filesystem", sync)
    monkeypatch.setattr(confirm_mod, "_fsync_path", fsync)
    ing = _ingest(tmp_path)
    ing.confirmer._publish = lambda topic, payload: events.append(f"ack:{payload.decode()}")
    mid = bytes(8) + (5).to_bytes(8, "big")
    msg, _ = _frame_msg(5, "delta-zstd")
    data = wire.encode(msg)
    assert ing._message("dev1", data, 0.0, mid, False) == "frame"
    assert ing.confirmer.flush() == 1
    acks = [i for i, e in enumerate(events) if e.startswith("ack:")]
    synced = [i for i, e in enumerate(events) if e == "sync" or e.startswith("fsync:00000005.png")]
    assert acks and synced and max(synced) < acks[0], events
    assert '"ranges":[[5,5]]' in events[acks[0]]
    events.clear()
    fail["on"] = True  # the next frame's sync fails: no ack for it
    msg6, _ = _frame_msg(6, "delta-zstd")
    assert ing._message("dev1", wire.encode(msg6), 0.0, bytes(8) + (6).to_bytes(8, "big"), False) == "frame"
    assert ing.confirmer.flush() == 0 and not any(e.startswith("ack:") for e in events)
    assert ing.confirmer.counters["fsync_errors"] == 1
