"""A walk past the wearer's registered pictures, with the true outline of each on every frame.

`walk(n)` renders `n` consecutive frames of the synthetic room (the camera's own smooth path) with
planar pictures drawn in at smoothly moving 3D poses (0.9-2.2 m, turning). Pictures pop into view
mid-walk (an occluder moving away) on frames that are no multiple of any search schedule, one while
another is already held, one leaves and comes back fast, and an unregistered distractor passes.
`score(frames, run)` runs a matcher over the walk and scores every frame: is each visible registered
picture's true outline redacted (≥ `COVERED` of its pixels), how many frames after it appeared was it
first covered, what the frame's coverage state said when a picture was not covered, CPU per frame.
Used by `python -m bench privacy` (section `walk`) and tests/test_private_objects.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

COVERED = 0.95  # a picture is covered on a frame when this much of its true outline is redacted
REGISTERED = ("family-photo", "coffee-poster")


@dataclass
class Appearance:
    name: str
    first: int  # first frame in view
    last: int  # last frame in view (inclusive)
    start: tuple[float, float, float]  # centre (x, y, z) metres in the camera frame at `first`
    drift: tuple[float, float, float]  # metres per frame
    yaw0: float  # degrees at `first`
    turn: float  # degrees per frame
    width_m: float = 0.4


# Frames chosen so that no schedule of interval 2-10 starting at frame 0 searches on an appearance.
APPEARANCES = (
    Appearance("family-photo", 7, 69, (-0.35, -0.05, 1.6), (0.004, 0.001, 0.002), -20.0, 0.5),
    Appearance("coffee-poster", 23, 101, (0.45, 0.1, 2.0), (-0.002, -0.001, -0.003), 25.0, -0.4, 0.45),
    Appearance("rocket", 41, 89, (0.0, 0.3, 1.4), (0.003, 0.0, 0.0), 10.0, 0.2, 0.3),  # not registered
    Appearance("family-photo", 83, 119, (0.55, 0.32, 1.2), (-0.012, 0.0, 0.003), 15.0, -0.6, 0.35),
)


def _outline(app: Appearance, k: int, tex_shape: tuple[int, ...], w: int, h: int, fx: float) -> np.ndarray:
    t = k - app.first
    centre = np.array(app.start) + t * np.array(app.drift)
    yaw = np.deg2rad(app.yaw0 + t * app.turn)
    rot = cv2.Rodrigues(np.array([0.1, yaw, 0.05]))[0]
    height_m = app.width_m * tex_shape[0] / tex_shape[1]
    local = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]]) * [app.width_m, height_m, 0]
    cam = local @ rot.T + centre
    return np.stack([fx * cam[:, 0] / cam[:, 2] + (w - 1) / 2, fx * cam[:, 1] / cam[:, 2] + (h - 1) / 2],
                    1).astype(np.float32)


def walk(n: int = 120, seed: int = 0) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """[(BGR frame, {registered name: true outline 4×2})] for frames 0..n-1."""
    from capture.scene_private import exemplar
    from capture.synthetic import SyntheticSource
    from redact.private.objects import _fit

    src = SyntheticSource(pace="fast", seed=seed, text_objects=False)
    textures = {a.name: _fit(exemplar(a.name)) for a in APPEARANCES}
    rng = np.random.default_rng(seed + 11)
    out = []
    for k in range(n):
        frame, _, _ = src.render(k)
        h, w = frame.shape[:2]
        truth: dict[str, np.ndarray] = {}
        for app in APPEARANCES:
            if not app.first <= k <= app.last:
                continue
            tex = textures[app.name]
            uv = _outline(app, k, tex.shape, w, h, src.intrinsics.fx)
            th, tw = tex.shape[:2]
            hom = cv2.getPerspectiveTransform(np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float32), uv)
            warped = cv2.warpPerspective(tex, hom, (w, h), flags=cv2.INTER_LINEAR)
            mask = cv2.warpPerspective(np.full((th, tw), 255, np.uint8), hom, (w, h), flags=cv2.INTER_NEAREST) > 127
            frame[mask] = warped[mask]
            if app.name in REGISTERED:
                truth[app.name] = uv
        noisy = frame.astype(np.int16) + rng.integers(-3, 4, frame.shape, dtype=np.int16)
        out.append((np.clip(noisy, 0, 255).astype(np.uint8), truth))
    return out


def _mask(quads: list[np.ndarray], w: int, h: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    for q in quads:
        if np.all(np.isfinite(q)):
            cv2.fillPoly(m, [np.round(q * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return m.view(bool)


def score(frames: list[tuple[np.ndarray, dict[str, np.ndarray]]],
          runs: dict[str, Callable[[np.ndarray], tuple[list[Any], dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """Each `runs[label](bgr)` → (hits with .name and .quad, coverage {"coverage", "age"}) per frame, in
    order. Variants take turns on every frame, so a machine's load changing during the walk weighs on
    all of them alike (their CPU ratios are side by side, not minutes apart)."""
    tallies = {label: _Tally() for label in runs}
    for k, (bgr, truth) in enumerate(frames):
        h, w = bgr.shape[:2]
        all_truth = _mask(list(truth.values()), w, h)
        truth_masks = {name: _mask([quad], w, h) for name, quad in truth.items()}
        for label, run in runs.items():
            c = time.process_time()
            hits, cov = run(bgr)
            tallies[label].add(k, time.process_time() - c, hits, cov, truth_masks, all_truth)
    return {label: t.result() for label, t in tallies.items()}


class _Tally:
    def __init__(self) -> None:
        self.object_frames = self.covered = self.over_px = self.truth_px = self.false_names = 0
        self.outline_fraction: list[float] = []
        self.uncovered_states: dict[str, int] = {}
        self.cpu: list[float] = []
        self.first_covered: dict[str, int | None] = {}

    def add(self, k: int, cpu: float, hits: list[Any], cov: dict[str, Any], truth: dict[str, np.ndarray],
            all_truth: np.ndarray) -> None:
        self.cpu.append(cpu)
        redacted = _mask([hit.quad for hit in hits], all_truth.shape[1], all_truth.shape[0])
        self.false_names += sum(hit.name not in truth for hit in hits)
        self.over_px += int((redacted & ~all_truth).sum())
        self.truth_px += int(all_truth.sum())
        for name, t in truth.items():
            frac = float((redacted & t).sum() / max(1, t.sum()))
            self.object_frames += 1
            self.outline_fraction.append(frac)
            app = next(a for a in APPEARANCES if a.name == name and a.first <= k <= a.last)
            key = f"{name}@{app.first}"
            if frac >= COVERED:
                self.covered += 1
                if self.first_covered.get(key) is None:
                    self.first_covered[key] = k - app.first
            else:
                self.first_covered.setdefault(key, None)
                state = f"{cov.get('coverage', 'none')}" + (" (searched, missed)" if cov.get("age") == 0 else "")
                self.uncovered_states[state] = self.uncovered_states.get(state, 0) + 1

    def result(self) -> dict[str, Any]:
        return {"object_frames": self.object_frames,
                "recall_per_frame": round(self.covered / max(1, self.object_frames), 4),
                "true_outline_redacted_mean": round(float(np.mean(self.outline_fraction)), 4),
                "frames_to_first_cover_by_appearance": self.first_covered,
                "uncovered_object_frames_by_coverage_state": self.uncovered_states,
                "over_redacted_px_per_true_px": round(self.over_px / max(1, self.truth_px), 3),
                "hits_with_no_such_object_in_view": self.false_names,
                "cpu_ms_per_frame": round(1e3 * float(np.mean(self.cpu)), 2),
                "cpu_ms_p99": round(1e3 * float(np.percentile(self.cpu, 99)), 2)}
