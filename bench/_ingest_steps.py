"""The ingest's CPU per frame, step by step, old and new depth PNG writers side by side in one run
(`python -m bench uplink_ingest --direct [N]`).

The real message path minus the broker: signed 640×480 frames (wire default codec, delta-zstd) are
cut into 128 KiB chunks and handed to `Ingest.handle` exactly as the MQTT connection hands them over
(reassembly files, signature check with a device registry, CRC, decode, TUM files, commit line), and
the confirmer's durable-write + ack round runs every 6 frames (0.2 s at 30 fps) as in production.
Contenders (`[ingest] depth_png`: `opencv` = the pre-issue-13 cv2.imencode path, `fast`) alternate in
blocks of frames, so load changes on a shared machine hit both alike. Two depth sets: the synthetic
source's continuous noisy depth, and Kinect-like depth (quantised, ~20 % holes; bench/depth.py) —
what a real TUM sequence looks like. CPU is `time.thread_time()` per step (one thread does it all).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class _Steps:
    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, key: str) -> None:
        inner: Callable[..., Any] = getattr(owner, attr)

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.thread_time()
            try:
                return inner(*a, **kw)
            finally:
                self.cpu[key] = self.cpu.get(key, 0.0) + time.thread_time() - t0

        self.undo.append((owner, attr, inner))
        setattr(owner, attr, timed)

    def restore(self) -> None:
        for owner, attr, inner in reversed(self.undo):
            setattr(owner, attr, inner)
        self.undo.clear()


def _instrument(steps: _Steps) -> None:
    from depth.codec.delta_zstd import DeltaZstdCodec
    from uplink import wire
    from uplink.backend import confirm, sink, tum_depth
    from uplink.backend.reassembly import Reassembler
    from uplink.backend.registry import Registry

    steps.wrap(Reassembler, "add", "reassembly (chunk files, assemble)")
    steps.wrap(Registry, "check", "signature check (Ed25519)")
    steps.wrap(wire, "decode", "envelope decode + CRC")
    steps.wrap(DeltaZstdCodec, "decode", "depth codec decode (delta-zstd)")
    steps.wrap(tum_depth, "to_tum", "depth scaling to 5000 units/m")
    steps.wrap(tum_depth, "to_tum_depth", "depth scaling to 5000 units/m")  # the old path's (float64)
    steps.wrap(tum_depth, "encode_png16", "depth PNG-16 encode")
    steps.wrap(sink, "_atomic_write", "file writes (jpg, png, camera.json)")
    steps.wrap(sink, "_append_line", "commit line (frames.jsonl)")
    steps.wrap(confirm.Confirmer, "flush", "confirm round (syncfs + ack)")


def _messages(n_unique: int, kinect: bool) -> list[Any]:
    from bench.uplink import _frames

    frames = _frames(n_unique)
    if kinect:
        from bench.depth import kinect_like

        frames = [f.replace(depth=kinect_like(f.depth, i)) for i, f in enumerate(frames)]
    return frames


def _payloads(frames: list[Any], seqs: range, key: Any) -> list[list[bytes]]:
    from uplink import messages, wire

    codec = messages.depth_codec("delta-zstd")
    base = [messages.encode_frame(f, codec, 85) for f in frames]
    out = []
    epoch = os.urandom(8)
    for seq in seqs:
        m = base[seq % len(base)]
        m.seq = seq
        out.append(wire.chunks(wire.encode(m), epoch + seq.to_bytes(8, "big"), 128 * 1024, key.sign))
    return out


def bench_direct(n: int = 120, block: int = 12, writers: tuple[str, ...] = ("opencv", "fast")) -> dict[str, Any]:
    from uplink.backend.config import IngestConfig
    from uplink.backend.ingest import Ingest
    from uplink.identity import DeviceKey, registry_entry

    tmp = Path(tempfile.mkdtemp(prefix="crowdcap-bench-ingest-direct-"))
    result: dict[str, Any] = {"frames_per_contender": n, "block": block, "chunk_bytes": 128 * 1024,
                              "wire_depth_codec": "delta-zstd", "resolution": "640x480"}
    try:
        key = DeviceKey.load_or_create(tmp / "key")
        (tmp / "devices.toml").write_text(registry_entry("bench", key))
        for kinect in (False, True):
            frames = _messages(6, kinect)
            payloads = _payloads(frames, range(n), key)
            ingests = {}
            for w in writers:
                cfg = IngestConfig(brokers=["mqtt://127.0.0.1:1"], out=str(tmp / f"out-{w}-{int(kinect)}"),
                                   registry=str(tmp / "devices.toml"), depth_png=w)  # type: ignore[arg-type]
                ing = Ingest.from_config(cfg)
                ing.confirmer._publish = lambda topic, payload: None  # the ack's JSON is built; not sent
                ingests[w] = ing
            steps = {w: _Steps() for w in writers}
            cpu = dict.fromkeys(writers, 0.0)
            for start in range(0, n, block):
                for w in writers:  # alternate contenders block by block
                    s, ing = steps[w], ingests[w]
                    _instrument(s)
                    try:
                        t0 = time.thread_time()
                        for i in range(start, min(n, start + block)):
                            for p in payloads[i]:
                                ing.handle("crowdcap/v1/bench/frame", p)
                            if i % 6 == 5:
                                ing.confirmer.flush()
                        ing.confirmer.flush()
                        cpu[w] += time.thread_time() - t0
                    finally:
                        s.restore()
            section: dict[str, Any] = {}
            for w in writers:
                st = ingests[w].stats()
                frames_done = st.get("frame", 0)
                png_bytes = sum(p.stat().st_size for p in (ingests[w].out / "bench").glob("*/depth/*.png"))
                section[w] = {
                    "frames": frames_done, "rejected": st["rejected_total"],
                    "cpu_ms_per_frame": round(cpu[w] * 1000 / max(1, frames_done), 2),
                    "by_step_cpu_ms_per_frame": {k: round(v * 1000 / max(1, frames_done), 2)
                                                 for k, v in sorted(steps[w].cpu.items(), key=lambda kv: -kv[1])},
                    "depth_png_kb_per_frame": round(png_bytes / 1000 / max(1, frames_done), 1),
                    "depth_png_how": st["sink"], "acks": st["confirm"].get("acks_sent", 0),
                }
            if len(writers) == 2:
                a, b = writers
                section[f"cpu_ratio_{b}_vs_{a}"] = round(section[b]["cpu_ms_per_frame"]
                                                         / max(1e-9, section[a]["cpu_ms_per_frame"]), 3)
            result["kinect_like_depth" if kinect else "synthetic_depth"] = section
            for ing in ingests.values():
                ing.confirmer.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_average"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return result


def bench_png_only(repeat: int = 20) -> dict[str, Any]:
    """The PNG step alone on one frame of each depth set: CPU-ms and size per writer (+ OpenCV levels)."""
    import cv2

    from bench.depth import kinect_like
    from bench.uplink import _frames
    from capture.tum import to_tum_depth
    from uplink.backend.tum_depth import encode_png16

    depth = _frames(1)[0].depth
    out: dict[str, Any] = {}
    for name, d in (("synthetic_depth", depth), ("kinect_like_depth", kinect_like(depth))):
        tum = to_tum_depth(d, 1000.0)
        variants: dict[str, Callable[[], bytes]] = {
            "opencv_default": lambda t=tum: encode_png16(t, "opencv"),
            "opencv_level1": lambda t=tum: cv2.imencode(".png", t, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes(),
            "opencv_level3": lambda t=tum: cv2.imencode(".png", t, [cv2.IMWRITE_PNG_COMPRESSION, 3])[1].tobytes(),
            "fast": lambda t=tum: encode_png16(t, "fast"),
        }
        row = {}
        for v, fn in variants.items():
            fn()
            t0 = time.thread_time()
            for _ in range(repeat):
                data = fn()
            row[v] = {"cpu_ms": round((time.thread_time() - t0) * 1000 / repeat, 2), "kb": round(len(data) / 1000, 1),
                      "bit_exact": bool(np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), -1), tum))}
        out[name] = row
    return out


def bench_device_encode(n: int = 60, codecs: tuple[str, ...] = ("delta-zstd", "auto")) -> dict[str, Any]:
    """The device's uplink stage per frame, wire depth codec old default (delta-zstd) vs new (auto), on
    both depth sets: CPU-ms of JPEG, depth encode, framing + CRC + signature, spool append (fsync
    interval), the whole `UplinkStage.apply`, and what decoding that codec then costs the ingest."""
    import cv2

    from uplink import build_stage, messages, wire
    from uplink.config import UplinkConfig
    from uplink.identity import DeviceKey

    tmp = Path(tempfile.mkdtemp(prefix="crowdcap-bench-device-encode-"))
    out: dict[str, Any] = {"frames": n}
    try:
        key = DeviceKey.load_or_create(tmp / "key")
        for kinect in (False, True):
            frames = _messages(6, kinect)
            section: dict[str, Any] = {}
            for name in codecs:
                codec = messages.depth_codec(name)
                stage = build_stage(UplinkConfig(broker="", spool_dir=str(tmp / f"spool-{name}-{int(kinect)}")),
                                    "bench", "b1", signer=key.sign)
                cpu = dict.fromkeys(("jpeg", "depth_encode", "wire_encode_sign", "spool_append", "stage_apply",
                                     "ingest_depth_decode"), 0.0)
                size = 0
                for i in range(n):
                    f = frames[i % len(frames)].replace(seq=i)
                    t0 = time.thread_time()
                    cv2.imencode(".jpg", f.color, [cv2.IMWRITE_JPEG_QUALITY, 85])
                    t1 = time.thread_time()
                    depth_bytes = codec.encode(f.depth)
                    t2 = time.thread_time()
                    msg = messages.encode_frame(f, codec, 85)
                    t3 = time.thread_time()
                    data = wire.encode(msg)
                    wire.chunks(data, bytes(16), 128 * 1024, key.sign)
                    t4 = time.thread_time()
                    stage.spool.append(data, 1, wire.FRAME)
                    t5 = time.thread_time()
                    stage.apply(f.replace(seq=n + i))
                    t6 = time.thread_time()
                    codec.decode(depth_bytes, f.depth.shape[1], f.depth.shape[0])
                    t7 = time.thread_time()
                    for k, dt in zip(cpu, (t1 - t0, t2 - t1, t4 - t3, t5 - t4, t6 - t5, t7 - t6), strict=True):
                        cpu[k] += dt
                    size += len(depth_bytes)
                stage.close()
                section[name] = {f"{k}_cpu_ms": round(v * 1000 / n, 2) for k, v in cpu.items()}
                section[name]["depth_kb_per_frame"] = round(size / 1000 / n, 1)
            out["kinect_like_depth" if kinect else "synthetic_depth"] = section
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
