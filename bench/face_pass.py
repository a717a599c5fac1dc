"""`python -m bench face_pass [--rounds N] [--card CARD ...] [--size WxH ...]`: what ONE detector pass
costs, split into input tensor, onnxruntime run and decode (CPU-ms, process time, 1 intra-op thread),
for each face model card at each input size, and the old code path (cv2.dnn.blobFromImage and the
numpy N×N NMS, `redact.nms.nms_reference`) beside the new one (`redact.detector.to_blob`, OpenCV's
NMS) on the same outputs. Frames: the 24-face crowd of `capture.hard_faces` (hundreds of weak
candidates) and plain synthetic frames, alternately. Decoding at threshold 0.04 (`verify_min_score`:
the stage's every-frame weak-candidate pass). `verify_mosaic8` is a full-resolution re-check of 8
candidates (one 384×192 mosaic). Cards and sizes are interleaved round by round: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

MODELS = Path(__file__).resolve().parents[1] / "redact" / "models"
DEFAULT_CARDS = ["retinaface.toml", "retinaface-int8.toml", "centerface.toml", "centerface-int8.toml"]
DEFAULT_SIZES = ["640x480", "320x240", "384x288", "verify_mosaic8"]


def _frames() -> list[np.ndarray]:
    from capture.hard_faces import hard_case
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(640, 480, pace="fast", seed=0, n_frames=8)
    src.open()
    plain = [f for f in iter(src.read, None)]
    crowd = hard_case("crowd", plain, 0)[0]
    return [im for pair in zip((f.color for f in crowd), (f.color for f in plain), strict=True) for im in pair]


class _Timed:
    """One card at one size: the pass's parts, timed separately (old and new paths on the same input)."""

    def __init__(self, card: Path, size: str) -> None:
        import onnxruntime as ort

        from redact.cards import load_card
        from redact.detector import Detector

        self.det = Detector(load_card(card), threads=1)
        self.size = size
        self.run_options = ort.RunOptions()
        self.cpu: dict[str, list[float]] = {k: [] for k in ("resize", "tensor_old", "tensor_new", "session",
                                                             "decode_old", "decode_new")}
        self.candidates: list[int] = []

    def image(self, frame: np.ndarray) -> np.ndarray:
        if self.size == "verify_mosaic8":  # 8 crops of 64 px with 32 px gaps, as Detector.verify lays them out
            mosaic = np.zeros((192, 384, 3), np.uint8)
            for i in range(8):
                r, c = divmod(i, 4)
                mosaic[r * 96 + 16:r * 96 + 80, c * 96 + 16:c * 96 + 80] = frame[100 + 40 * r:164 + 40 * r, 60 * i:60 * i + 64]
            return mosaic
        w, h = (int(v) for v in self.size.split("x"))
        t = time.process_time()
        img = frame if (w, h) == frame.shape[1::-1] else cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        m = self.det.card.input.multiple
        img = cv2.copyMakeBorder(img, 0, -h % m, 0, -w % m, cv2.BORDER_CONSTANT, value=0) if (h % m or w % m) else img
        self.cpu["resize"].append(time.process_time() - t)
        return img

    def step(self, frame: np.ndarray) -> None:
        from redact import nms as nms_module
        from redact.detector import to_blob

        img = self.image(frame)
        inp = self.det.card.input
        mean = inp.mean if isinstance(inp.mean, tuple) else (inp.mean,) * 3
        t = time.process_time()
        blob_old = cv2.dnn.blobFromImage(img, scalefactor=inp.scale, mean=mean, swapRB=inp.channels == "rgb")
        self.cpu["tensor_old"].append(time.process_time() - t)
        t = time.process_time()
        blob = to_blob(img, inp)
        self.cpu["tensor_new"].append(time.process_time() - t)
        t = time.process_time()
        outs = self.det.session.run(blob, self.run_options)
        self.cpu["session"].append(time.process_time() - t)
        size = (img.shape[1], img.shape[0])
        decoder_module = __import__(type(self.det.decoder).__module__, fromlist=["nms"])
        try:
            decoder_module.nms = nms_module.nms_reference
            t = time.process_time()
            old = self.det.decoder.decode(outs, size, 0.04)
            self.cpu["decode_old"].append(time.process_time() - t)
        finally:
            decoder_module.nms = nms_module.nms
        t = time.process_time()
        new = self.det.decoder.decode(outs, size, 0.04)
        self.cpu["decode_new"].append(time.process_time() - t)
        if not np.array_equal(old, new) or not np.array_equal(blob_old, blob):
            raise SystemExit(f"bench face_pass: old and new paths differ for {self.det.card.name} at {self.size}")
        self.candidates.append(len(new))

    def result(self) -> dict[str, Any]:
        ms = {k: round(float(np.mean(v)) * 1000, 3) if v else 0.0 for k, v in self.cpu.items()}
        old = ms["resize"] + ms["tensor_old"] + ms["session"] + ms["decode_old"]
        new = ms["resize"] + ms["tensor_new"] + ms["session"] + ms["decode_new"]
        return {"cpu_ms": ms, "pass_cpu_ms_old": round(old, 2), "pass_cpu_ms_new": round(new, 2),
                "outside_session_cpu_ms_old": round(old - ms["session"], 2),
                "outside_session_cpu_ms_new": round(new - ms["session"], 2),
                "ratio_new_over_old": round(new / max(1e-9, old), 3),
                "boxes_at_0.04_mean": round(float(np.mean(self.candidates)), 1)}


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench face_pass", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6, help="rounds; each runs every card × size on 4 frames")
    ap.add_argument("--card", action="append", default=[], help="model card (default: the shipped face cards)")
    ap.add_argument("--size", action="append", default=[], help="WxH or verify_mosaic8 (default: all four)")
    args = ap.parse_args(argv)
    cards = [Path(c) for c in args.card] or [MODELS / c for c in DEFAULT_CARDS]
    sizes = args.size or DEFAULT_SIZES
    frames = _frames()
    runs = {f"{c.stem}@{s}": _Timed(c, s) for c in cards for s in sizes}
    for r in runs.values():  # warm-up: first runs allocate
        r.step(frames[0])
        r.cpu = {k: [] for k in r.cpu}
        r.candidates = []
    load = os.getloadavg()[0]
    for k in range(args.rounds):
        for r in runs.values():
            for f in frames[(4 * k) % len(frames):(4 * k) % len(frames) + 4]:
                r.step(f)
    return {"threads": 1, "rounds": args.rounds, "load_avg_1min_at_start": round(load, 2),
            "load_avg_1min_at_end": round(os.getloadavg()[0], 2), "passes": {k: r.result() for k, r in runs.items()}}
