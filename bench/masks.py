"""`python -m bench masks`: person masks (redact/segment.py) — cost per person, coverage, collateral.

Real photo: scikit-image's astronaut (the synthetic runner's texture) in a person box — segmenter CPU-ms
per person against the SSDLite person detector's pass on the same 640×480 frame in the same run
(ratio), coverage of her face and chest (the private parts the mask must hold: ≥ 0.99 expected), and
the share of the box left untouched (collateral saved vs the box).
Synthetic frames: the stage with the same person rule as `shape = "box"` and `shape = "mask"` (face
rule on too, action fill), side by side: CPU-ms per frame (ratio), the share of each person box a
mask leaves untouched, masked vs fallback regions by reason, and the share of the bib's and the
person truth box's pixels filled (the bib, on the runner's chest, must be filled as with a box).

There is no person silhouette in the synthetic scene (the runner is a photo on a quad with a
rectangle as truth), so no IoU against a silhouette is reported: coverage of known private parts is.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from redact import segment


def _ms(fn: Any, n: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of n calls."""
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return round(float(np.median(wall)) * 1000, 2), round(float(np.median(cpu)) * 1000, 2)


def photo(n: int) -> dict[str, Any]:
    from redact.cards import load_card, shipped_card
    from redact.detector import Detector

    seg = segment.Segmenter(load_card(shipped_card("selfie_segmentation")))
    img, box, face = segment.astronaut()
    frame = np.full((480, 640, 3), 128, np.uint8)
    frame[:, 64:576] = img[32:512]
    fbox = [box[0] + 64, 0, box[2] + 64, 480]
    m = seg.mask(frame, fbox)
    x0, y0 = fbox[:2]
    fx1, fy1, fx2, fy2 = face[0] + 64 - x0, face[1] - 32 - y0, face[2] + 64 - x0, face[3] - 32 - y0
    det = Detector(load_card(shipped_card("ssdlite_person")), threads=1)
    p, _ = det.plan(640, 480, (640, 480), (0, 0))
    seg_wall, seg_cpu = _ms(lambda: seg.mask(frame, fbox), n)
    det_wall, det_cpu = _ms(lambda: det.run(frame, p, None), n)
    roi = frame[0:480, x0:fbox[2]]
    box_wall, box_cpu = _ms(lambda: segment.ACTIONS["blur"](roi.copy()), n)
    region = {"bbox": fbox, "action": "blur", "applies_to": "both"}
    depth = np.zeros((480, 640), np.uint16)
    paint_wall, paint_cpu = _ms(lambda: segment.paint(frame.copy(), depth, region, m), n)
    return {"person_box": fbox,
            "segmenter_ms_per_person": seg_wall, "segmenter_cpu_ms_per_person": seg_cpu,
            "baseline_ssdlite_person_pass_cpu_ms": det_cpu, "baseline_ssdlite_person_pass_ms": det_wall,
            "segmenter_over_ssdlite_cpu": round(seg_cpu / max(det_cpu, 1e-6), 3),
            "blur_box_cpu_ms": box_cpu, "blur_masked_cpu_ms_incl_frame_copy": paint_cpu,
            "face_covered": round(float(m[fy1:fy2, fx1:fx2].mean()), 4),
            "chest_covered": round(float(m[330 - 32:450 - 32, 250 + 64 - x0:400 + 64 - x0].mean()), 4),
            "box_share_masked": round(float(m.mean()), 4),
            "collateral_saved": round(1.0 - float(m.mean()), 4)}


def synthetic(frames: list[Any], tmp: Path) -> dict[str, Any]:
    from redact import build_stage
    from redact.config import RedactConfig

    out: dict[str, Any] = {}
    for shape in ("box", "mask"):
        pol = tmp / f"{shape}.toml"
        pol.write_text(f'version = "bench-{shape}"\n[[rules]]\nclass = "face"\n'
                       f'[[rules]]\nclass = "person"\naction = "fill"\nshape = "{shape}"\n')
        stage = build_stage(RedactConfig(policy=str(pol), budget_ms=2000.0, person_every=1, floor="lowered"))
        if stage.load_error:
            raise SystemExit(f"bench masks: {stage.load_error}")
        before = segment.counts()
        cpu, untouched, bib, person, shapes, withheld = [], [], [], [], [], 0
        for f in frames:
            c = time.process_time()
            try:
                o = stage.apply(f)
            except Exception:
                withheld += 1
                continue
            cpu.append(time.process_time() - c)
            filled = (o.color == 0).all(axis=2)
            for r in o.redaction["regions"]:
                if r["class"] == "person":
                    x1, y1, x2, y2 = r["bbox"]
                    same = (o.color[y1:y2, x1:x2] == f.color[y1:y2, x1:x2]).all(axis=2)
                    untouched.append(float(same.mean()))
                    shapes.append(r.get("shape", "box"))
            truth = f.attachments["truth"]["private"]
            for boxes, acc in ((truth.get("custom:bib", []), bib), (truth.get("person", []), person)):
                for x1, y1, x2, y2 in boxes:
                    if x2 > x1 and y2 > y1:
                        acc.append(float(filled[y1:y2, x1:x2].mean()))
        after = segment.counts()
        stage.close()
        out[shape] = {"frames": len(frames), "frames_withheld": withheld,
                      "cpu_ms_per_frame": round(float(np.mean(cpu)) * 1000, 2) if cpu else None,
                      "person_regions": len(shapes), "masked_regions": shapes.count("mask"),
                      "person_box_share_untouched_mean": round(float(np.mean(untouched)), 4) if untouched else None,
                      "bib_truth_filled_mean": round(float(np.mean(bib)), 4) if bib else None,
                      "bib_truth_filled_min": round(float(np.min(bib)), 4) if bib else None,
                      "person_truth_filled_mean": round(float(np.mean(person)), 4) if person else None,
                      "fallbacks": {k: after.get(k, 0) - before.get(k, 0)
                                    for k in ("mask_small", "mask_fault", "mask_budget")}}
    if out["box"]["cpu_ms_per_frame"] and out["mask"]["cpu_ms_per_frame"]:
        out["mask_over_box_cpu"] = round(out["mask"]["cpu_ms_per_frame"] / out["box"]["cpu_ms_per_frame"], 3)
    return out


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench masks", description=__doc__)
    ap.add_argument("--frames", type=int, default=30, help="synthetic frames (30 fps trajectory)")
    ap.add_argument("--repeat", type=int, default=30, help="timed calls per photo measurement")
    args = ap.parse_args(argv)
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(640, 480, pace="fast", n_frames=args.frames)
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    result: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
                              "settings": {"threshold": segment.settings().threshold,
                                           "dilate": segment.settings().dilate,
                                           "context": segment.settings().context,
                                           "min_fill": segment.settings().min_fill,
                                           "frame_ms": segment.settings().frame_ms},
                              "photo_astronaut": photo(args.repeat)}
    with tempfile.TemporaryDirectory() as tmp:
        result["synthetic"] = synthetic(frames, Path(tmp))
    result["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    return result
