"""`python -m bench privacy`: the wearer's private objects and 3D volumes, per 640×480 frame.

Objects: held-out synthetic views (capture/scene_private.py: a registered picture at a new 3D pose,
0.6-2.5 m, turned up to ±55°, new lighting; every 3rd view an unregistered distractor) — precision,
recall, how much of the true outline is redacted, and matching time (wall and CPU) per frame, SIFT and
ORB side by side in one run. Volumes: the synthetic walk with a box-shaped volume around the box on the
floor — the depth-clipped projection against its image-space rectangle (what a Ring-style 2D zone
would hide), content recall, and time per frame (projection alone, and with pose tracking on the raw frame).
Walk (bench/_object_walk.py): consecutive frames where registered pictures appear between searches and
move; per-frame recall, frames until first covered, the coverage state of uncovered frames, and CPU
per frame for each search schedule (every frame, every 3rd coasting as the demo did, every N followed
by optical flow) side by side on the same frames.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import cv2
import numpy as np


def _objects(n_views: int, variants: list[tuple[Any, ...]]) -> dict[str, Any]:
    from capture.scene_private import exemplar, object_view
    from capture.synthetic import SyntheticSource
    from redact.private.common import polygon_mask
    from redact.private.objects import ObjectMatcher, PrivateObject, _fit

    registered = ["family-photo", "coffee-poster"]
    distractors = ["rocket", "colorwheel", "motorcycle"]
    src = SyntheticSource(pace="fast")
    rng = np.random.default_rng(2026)
    views = []
    for i in range(n_views):
        background, _, _ = src.render(i * 13)
        name = registered[i % 2] if i % 3 else distractors[(i // 3) % 3]
        img, quad = object_view(background, _fit(exemplar(name)), rng)
        views.append((cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), name, quad))
    objs = [PrivateObject(n, "both", [_fit(exemplar(n))]) for n in registered]
    out: dict[str, Any] = {"views": n_views, "positives": sum(v[1] in registered for v in views)}
    for label, features, scale, *layers in variants:
        matcher = ObjectMatcher(objs, features, hold_frames=0, frame_scale=scale, **(
            {"octave_layers": layers[0]} if layers else {}))
        tp = fp = 0
        coverage: list[float] = []
        wall: list[float] = []
        cpu: list[float] = []
        matcher.match(views[0][0])  # warm up
        for gray, name, quad in views:
            matcher.reset()
            t, c = time.perf_counter(), time.process_time()
            hits = matcher.match(gray)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            truth = np.zeros(gray.shape, bool)
            placed = polygon_mask(quad, gray.shape[1], gray.shape[0])
            if placed is not None:
                m, x0, y0 = placed
                truth[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
            for h in hits:
                got = np.zeros(gray.shape, bool)
                p = polygon_mask(h.quad, gray.shape[1], gray.shape[0])
                if p is not None:
                    m, x0, y0 = p
                    got[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
                overlap = (got & truth).sum() / max(1, truth.sum())
                if h.name == name and overlap >= 0.5:
                    tp += 1
                    coverage.append(float(overlap))
                else:
                    fp += 1
        pos = out["positives"]
        out[label] = {"precision": round(tp / max(1, tp + fp), 4), "recall": round(tp / max(1, pos), 4),
                      "true_outline_redacted_mean": round(float(np.mean(coverage)), 4) if coverage else None,
                      "match_ms_mean": round(1e3 * float(np.mean(wall)), 2),
                      "match_ms_p99": round(1e3 * float(np.percentile(wall, 99)), 2),
                      "cpu_ms_per_frame": round(1e3 * float(np.mean(cpu)), 2)}
    return out


WALK_VARIANTS = (  # label, search interval, follow by optical flow, frame scale, SIFT octave layers
    ("search_every_frame (the config default)", 1, True, 0.75, 3),
    ("interval_3_coasting (the demo before: no flow, velocity only)", 3, False, 0.75, 3),
    ("interval_3_followed", 3, True, 0.75, 3),
    ("interval_6_followed (the demo now)", 6, True, 0.75, 3),
    ("interval_6_followed_2_octave_layers", 6, True, 0.75, 2),
    ("interval_10_followed", 10, True, 0.75, 3),
)


def _walk(n_frames: int) -> dict[str, Any]:
    """Per-frame recall on a walk where pictures appear between searches (bench/_object_walk.py), every
    schedule side by side on the same frames, taking turns frame by frame (SIFT)."""
    from bench._object_walk import REGISTERED, score, walk
    from capture.scene_private import exemplar
    from redact.private.objects import ObjectMatcher, PrivateObject, _fit

    frames = walk(n_frames)
    objs = [PrivateObject(n, "both", [_fit(exemplar(n))]) for n in REGISTERED]
    out: dict[str, Any] = {"frames": len(frames), "covered_means": "≥ 95 % of the true outline redacted"}
    matchers: dict[str, ObjectMatcher] = {}
    for label, interval, track, scale, layers in WALK_VARIANTS:
        m = ObjectMatcher(objs, "sift", frame_scale=scale, interval=interval, track=track,
                          hold_frames=max(5, interval - 1), octave_layers=layers)
        m.match(cv2.cvtColor(frames[0][0], cv2.COLOR_BGR2GRAY))  # warm up, then start the walk afresh
        m.reset()
        m.passes = 0
        m.stats.clear()
        matchers[label] = m

    def runner(m: ObjectMatcher) -> Any:
        return lambda bgr: (m.match(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)), m.coverage())

    for label, result in score(frames, {label: runner(m) for label, m in matchers.items()}).items():
        out[label] = result | {"full_searches": matchers[label].passes, **dict(matchers[label].stats)}
    return out


def _volumes(n_frames: int) -> dict[str, Any]:
    from capture.frame import RGBDFrame
    from capture.synthetic import SyntheticSource
    from redact.private.config import PrivacyConfig
    from redact.private.layer import PrivateLayer, touch_changed
    from redact.private.volumes import Volume, VolumeStore, volume_mask

    lo, hi = np.array([1.1, 0.9, 2.2]), np.array([1.7, 1.5, 2.8])
    src = SyntheticSource(pace="fast")
    src.open()
    r = src._renderer
    assert r is not None
    box = [i for i, q in enumerate(r.quads) if np.all((q.corners() >= lo - 0.01) & (q.corners() <= hi + 0.01))]
    vol = Volume("toybox", "p", (lo + hi) / 2, np.eye(3), hi - lo + 0.1)
    proj_ms, rect_px, mask_px, content_px, caught_px = [], 0, 0, 0, 0
    frames = []
    for i in range(0, n_frames * 4, 4):
        color, depth, truth = src.render(i)
        _, _, ids = r.render(truth["pose"])
        frames.append((color, depth, truth["pose"], np.isin(ids, box)))
    for _color, depth, pose, content in frames:
        t = time.perf_counter()
        placed = volume_mask(vol, pose, src.intrinsics, depth, 1000.0, 0.05)
        proj_ms.append(time.perf_counter() - t)
        content_px += int(content.sum())
        if placed is None:
            continue
        m, x0, y0 = placed
        full = np.zeros(depth.shape, bool)
        full[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
        mask_px += int(full.sum())
        caught_px += int((full & content).sum())
        ys, xs = np.nonzero(full)
        if len(xs):
            rect_px += int((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    # the whole layer: pose on the raw frame (odometry) + projection + redaction
    with tempfile.TemporaryDirectory() as state:
        layer = PrivateLayer.load(state, PrivacyConfig())
        f0 = RGBDFrame("b", "s", 0, 0, 1.0, frames[0][0], frames[0][1], 1000.0, src.intrinsics)
        layer.request_mark("scratch", [0.3, 0.3, 0.3], 1.5)
        layer.apply(f0, f0.color, f0.depth)
        place = layer.pose.place if layer.pose else "p"
        VolumeStore(state).remove("scratch")
        VolumeStore(state).add(Volume("toybox", place, vol.centre, vol.rotation, vol.size))
        touch_changed(state)
        layer.reload()
        wall, cpu, leaked = [], [], 0
        for k, (color, depth, _pose, content) in enumerate(frames[1:], 1):
            f = RGBDFrame("b", "s", k * 4, k, 1.0, color, depth, 1000.0, src.intrinsics)
            t, c = time.perf_counter(), time.process_time()
            oc, od, _ = layer.apply(f, f.color, f.depth)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            leaked += int((content & (oc.any(axis=2) | (od > 0))).sum())
    return {"frames": len(frames), "content_pixels": content_px,
            "content_recall_true_pose": round(caught_px / max(1, content_px), 5),
            "redacted_pixels_depth_clipped": mask_px, "redacted_pixels_2d_rectangle": rect_px,
            "rectangle_over_depth_clipped": round(rect_px / max(1, mask_px), 3),
            "projection_ms_mean": round(1e3 * float(np.mean(proj_ms)), 3),
            "projection_ms_p99": round(1e3 * float(np.percentile(proj_ms, 99)), 3),
            "with_pose_tracking_ms_mean": round(1e3 * float(np.mean(wall)), 3),
            "with_pose_tracking_cpu_ms_per_frame": round(1e3 * float(np.mean(cpu)), 3),
            "content_pixels_leaked_estimated_pose": leaked}


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench privacy", description=__doc__)
    ap.add_argument("--views", type=int, default=90, help="held-out object views (default 90)")
    ap.add_argument("--frames", type=int, default=60, help="walk frames for volumes (default 60)")
    ap.add_argument("--walk-frames", type=int, default=120, help="frames of the object walk (default 120)")
    ap.add_argument("--sections", default="objects,walk,volumes", help="comma-separated (default: all)")
    args = ap.parse_args(argv)
    variants: list[tuple[Any, ...]] = [
        ("sift", "sift", 1.0), ("sift_scale_0.75", "sift", 0.75),
        ("sift_scale_0.75_2_octave_layers", "sift", 0.75, 2), ("sift_scale_0.6", "sift", 0.6),
        ("orb", "orb", 1.0)]
    load = round(__import__("os").getloadavg()[0], 2)
    sections = args.sections.split(",")
    out: dict[str, Any] = {}
    if "objects" in sections:
        out["objects"] = _objects(args.views, variants)
    if "walk" in sections:
        out["walk"] = _walk(args.walk_frames)
    if "volumes" in sections:
        out["volumes"] = _volumes(args.frames)
    return out | {"machine": {"load_1min_at_start": load, "load_1min_at_end": round(__import__("os").getloadavg()[0], 2)}}
