"""`synthetic` source: a procedural room with real faces, seen from a known smooth camera trajectory.

Every frame carries its ground truth in `frame.attachments["truth"]`: `pose` (4×4 camera-to-world) and
`faces` (visible face boxes, pixels) — so odometry and redaction recall can be scored. Deterministic by
seed. Depth gets Kinect-like noise (σ ≈ 1.2 mm·z²) and a few dropouts, like a real sensor.
"""

from __future__ import annotations

import time

import numpy as np

from capture.frame import Intrinsics, RGBDFrame, now_stamps
from capture.scene import Renderer, build_scene
from capture.scene_text import visible_private

DEPTH_SCALE = 1000.0  # millimetres


def trajectory_pose(t: float) -> np.ndarray:
    """Camera-to-world pose at time `t` seconds: a gentle walk-and-look-around, smooth and periodic."""
    tau = 2 * np.pi * t
    pos = np.array([0.35 * np.sin(tau / 9.0), 0.06 * np.sin(tau / 4.3), 0.25 * np.sin(tau / 11.0)])
    yaw, pitch, roll = 0.18 * np.sin(tau / 7.5), 0.05 * np.sin(tau / 5.1), 0.03 * np.sin(tau / 6.7)
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, :3] = ry @ rx @ rz
    pose[:3, 3] = pos
    return pose


class SyntheticSource:
    """Renders frame i at time i/fps. `pace="realtime"` sleeps to hold fps; `"fast"` does not.

    `cycle=N` renders only the first N frames and then repeats them (new seq and timestamps): for
    benchmarks that must measure the pipeline, not the renderer. `palindrome=True` plays them
    forth and back (0 … N-1, N-2 … 1, …) so the camera path stays continuous (odometry sees no jump);
    `prerender=True` renders the N frames in `open()`, before the clock starts — a camera costs the
    device no CPU to "render" its frames, so the demo's 2 cores go to the device's stages.
    """

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, seed: int = 0,
                 pace: str = "realtime", device_id: str = "synthetic", session_id: str = "s0",
                 n_frames: int | None = None, noise: bool = True, cycle: int = 0, props: bool = False,
                 palindrome: bool = False, prerender: bool = False, text_objects: bool = True) -> None:
        if pace not in ("realtime", "fast"):
            raise ValueError(f"pace: expected 'realtime' or 'fast', got {pace!r}")
        if fps <= 0:
            raise ValueError(f"fps: expected a positive number, got {fps!r}")
        s = width / 640.0
        self.intrinsics = Intrinsics(width, height, 525.0 * s, 525.0 * s, (width - 1) / 2, (height - 1) / 2)
        self.depth_scale = DEPTH_SCALE
        self.fps = float(fps)
        self.seed = seed
        self.pace = pace
        self.device_id = device_id
        self.session_id = session_id
        self.n_frames = n_frames
        self.noise = noise
        self.cycle = cycle
        self.palindrome = palindrome and cycle > 1
        self.prerender = prerender and cycle > 0
        self.props = props  # the wearer's private things in the room (capture/scene_private.py): the demo walk
        self.text_objects = text_objects  # signs, document, screen, bib, plates (capture/scene_text.py)
        self._renderer: Renderer | None = None
        self._opened = False
        self._index = 0
        self._t0 = 0.0
        self._cache: list[tuple[np.ndarray, np.ndarray, dict]] = []
        rng = np.random.default_rng(seed + 7919)
        # Noise fields made once and rolled per frame: realistic depth noise at a fraction of the cost.
        self._noise = rng.standard_normal((height, width)).astype(np.float32) if noise else None
        self._holes = (rng.random((height, width)) < 0.01) if noise else None

    def _scene(self) -> Renderer:
        if self._renderer is None:
            quads = build_scene(self.seed, self.text_objects)
            if self.props:
                from capture.scene import Quad
                from capture.scene_private import add_props

                add_props(quads, Quad)
            self._renderer = Renderer(quads, self.intrinsics)
        return self._renderer

    def open(self) -> None:
        if self.prerender:
            self._cache.extend(self.render(i) for i in range(len(self._cache), self.cycle))
            # every frame is cached: the renderer (~20 MB resident: textures, depth buffers) is not needed
            # while the frames play; `render()` builds it again if someone asks
            self._renderer = None
        else:
            self._scene()
        self._opened = True
        self._t0 = time.monotonic()

    def close(self) -> None:
        pass

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """(color, depth uint16, truth) of frame `index`."""
        renderer = self._scene()
        pose = trajectory_pose(index / self.fps)
        color, z, ids = renderer.render(pose)
        if self._noise is not None and self._holes is not None:
            shift = (index * 37) % z.shape[0], (index * 53) % z.shape[1]
            z = z + np.roll(self._noise, shift, (0, 1)) * (0.0012 * z * z)
            z[np.roll(self._holes, shift, (0, 1))] = 0.0
        depth = np.clip(np.rint(z * DEPTH_SCALE), 0, 65535).astype(np.uint16)
        truth = {"pose": pose, "faces": renderer.visible_faces(pose, ids),
                 "private": visible_private(renderer, pose, ids)}  # class → boxes (scene_text.py)
        return color, depth, truth

    def loop_index(self, i: int) -> int:
        """Which cached frame frame `i` shows (cycle mode)."""
        if not self.palindrome:
            return i % self.cycle
        k = i % (2 * self.cycle - 2)
        return k if k < self.cycle else 2 * self.cycle - 2 - k

    def read(self) -> RGBDFrame | None:
        if not self._opened:
            self.open()
        i = self._index
        if self.n_frames is not None and i >= self.n_frames:
            return None
        if self.pace == "realtime":
            delay = self._t0 + i / self.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing a camera, not synchronising threads
        if self.cycle:
            k = self.loop_index(i)
            if len(self._cache) <= k:  # first pass: k == len(cache)
                self._cache.append(self.render(k))
            color, depth, truth = self._cache[k]
        else:
            color, depth, truth = self.render(i)
        self._index += 1
        t_mono, t_utc = now_stamps()
        return RGBDFrame(self.device_id, self.session_id, i, t_mono, t_utc, color, depth, self.depth_scale,
                         self.intrinsics, attachments={"truth": truth})
