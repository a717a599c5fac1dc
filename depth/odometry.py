"""Fast RGB-D visual odometry: KLT tracks anchored in 3D at keyframes, pose by PnP + RANSAC.

At each keyframe, corners are detected on a downscaled grey image (default 320 px wide) where depth is
valid and locally smooth, and lifted to world points with the depth and the keyframe pose. Every frame,
the tracks are followed by pyramidal Lucas–Kanade (seeded by projecting the points through the
constant-velocity motion prior) and the camera pose comes from `solvePnPRansac` on the world points.
Because points are anchored at keyframes, drift only accumulates from keyframe to keyframe, not from
frame to frame. Failure (too little valid depth, too few inliers) triggers re-localisation against the
last keyframe's image; if that fails too, the frame is reported lost and the pose held at the prior.
Costs a few ms per 640×480 frame on one core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from capture.frame import Intrinsics


@dataclass
class OdometryOptions:
    work_width: int = 320          # processing width (height follows the aspect ratio)
    max_features: int = 400
    min_inliers: int = 25          # fewer → tracking failure
    min_valid_depth: float = 0.05  # fraction of pixels with depth; less → failure
    reproj_px: float = 1.5         # RANSAC threshold in working-resolution pixels
    depth_trunc: float = 6.0       # ignore depth beyond this (metres): noisy
    kf_translation: float = 0.10   # new keyframe after this much motion (metres) ...
    kf_rotation_deg: float = 8.0   # ... or rotation, since the last keyframe ...
    kf_min_tracks: float = 0.5     # ... or when fewer than this fraction of its tracks survive
    reinit_after: int = 15         # lost this many frames in a row → start a new map segment


@dataclass
class TrackResult:
    pose: np.ndarray               # 4×4 camera-to-world
    ok: bool                       # tracking succeeded (else pose is the motion prior)
    keyframe: bool                 # this frame became a keyframe
    inliers: int = 0
    relocalised: bool = False
    reason: str = ""               # why tracking failed, if it did
    segment: int = 0               # map segment: poses of different segments are not related


@dataclass
class _Keyframe:
    pose: np.ndarray
    gray: np.ndarray
    pts2d: np.ndarray              # N×2 float32, working resolution
    world: np.ndarray              # N×3 float64


@dataclass
class _State:
    pose: np.ndarray | None = None
    velocity: np.ndarray = field(default_factory=lambda: np.eye(4))  # last relative motion (cam-to-cam)
    velocity_dt: float = 0.0       # stamps the last relative motion took (0: unknown → per frame)
    t: float | None = None         # stamp of the last tracked frame
    gray: np.ndarray | None = None
    pts2d: np.ndarray | None = None
    world: np.ndarray | None = None
    keyframe: _Keyframe | None = None
    lost: bool = False             # the previous frame failed; tracks were reset to the keyframe
    lost_count: int = 0            # consecutive failures
    segment: int = 0


def rotation_angle_deg(r: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


def scale_motion(motion: np.ndarray, factor: float) -> np.ndarray:
    """The rigid motion `factor` times as long (rotation angle and translation scaled; factor ≤ 5)."""
    if factor == 1.0:
        return motion
    factor = float(np.clip(factor, 0.0, 5.0))  # a long gap: extrapolating further is a guess anyway
    rvec, _ = cv2.Rodrigues(motion[:3, :3])
    out = np.eye(4)
    out[:3, :3] = cv2.Rodrigues(rvec * factor)[0]
    out[:3, 3] = motion[:3, 3] * factor
    return out


def invert(pose: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = pose[:3, :3].T
    out[:3, 3] = -pose[:3, :3].T @ pose[:3, 3]
    return out


class Odometry:
    """Feed frames in order with `track`; poses are camera-to-world, the first frame is the origin."""

    def __init__(self, intr: Intrinsics, depth_scale: float, options: OdometryOptions | None = None,
                 initial_pose: np.ndarray | None = None) -> None:
        self.intr = intr
        self.depth_scale = float(depth_scale)
        self.opt = options or OdometryOptions()
        self.scale = min(1.0, self.opt.work_width / intr.width)
        self.work_size = (round(intr.width * self.scale), round(intr.height * self.scale))
        s = self.scale
        # Pixel centres map as (u + 0.5) * s - 0.5 under INTER_AREA resizing.
        self.k_work = np.array([[intr.fx * s, 0, (intr.cx + 0.5) * s - 0.5],
                                [0, intr.fy * s, (intr.cy + 0.5) * s - 0.5], [0, 0, 1]])
        self._initial = np.eye(4) if initial_pose is None else np.asarray(initial_pose, np.float64)
        self.state = _State()
        self.counters = {"frames": 0, "lost": 0, "relocalised": 0, "keyframes": 0, "new_segments": 0}

    # -- public ---------------------------------------------------------------------------------

    def track(self, color_bgr: np.ndarray, depth: np.ndarray, t: float | None = None) -> TrackResult:
        """Pose of this frame. `t`: its stamp in any increasing unit — the capture sequence number is
        best (frames dropped upstream leave gaps; wall time lies in fast replays) — so the motion prior
        is scaled across gaps."""
        if depth.shape != (self.intr.height, self.intr.width) or color_bgr.shape[:2] != depth.shape:
            raise ValueError(f"odometry: frame {color_bgr.shape[1]}×{color_bgr.shape[0]} / depth "
                             f"{depth.shape[1]}×{depth.shape[0]} does not match the camera "
                             f"{self.intr.width}×{self.intr.height}")
        self.counters["frames"] += 1
        gray = cv2.resize(cv2.cvtColor(color_bgr, cv2.COLOR_BGR2GRAY), self.work_size, interpolation=cv2.INTER_AREA)
        st = self.state
        if st.pose is None:
            st.t = t
            return self._start(gray, depth, self._initial)
        dt = None if t is None or st.t is None else t - st.t
        prior = st.pose @ scale_motion(st.velocity, dt / st.velocity_dt if dt and st.velocity_dt > 0 else 1.0)
        valid_fraction = np.count_nonzero(depth[::8, ::8]) / depth[::8, ::8].size
        reason = ""
        pose, inliers, keep = None, 0, None
        if valid_fraction < self.opt.min_valid_depth:
            reason = f"only {valid_fraction:.0%} of pixels have depth"
        else:
            assert st.gray is not None and st.pts2d is not None and st.world is not None
            pose, inliers, keep, reason = self._solve(st.gray, st.pts2d, st.world, gray, prior)
        relocalised = False
        if pose is None and st.keyframe is not None:
            kf = st.keyframe
            pose, inliers, keep, why = self._solve(kf.gray, kf.pts2d, kf.world, gray, prior)
            relocalised = pose is not None
            reason = reason if pose is None else ""
            if pose is None:
                reason = f"{reason}; re-localisation: {why}"
        if pose is None:
            self.counters["lost"] += 1
            st.pose, st.velocity, st.lost = prior, np.eye(4), True  # hold; do not extrapolate blindly
            st.t = t
            st.lost_count += 1
            depth_ok = valid_fraction >= self.opt.min_valid_depth
            if depth_ok and (st.keyframe is None or st.lost_count >= self.opt.reinit_after):
                # Never anchored, or lost for good: start a new map segment at the held pose.
                return self._new_segment(gray, depth, prior, reason)
            if st.keyframe is not None:  # next time, track from the keyframe
                st.gray, st.pts2d, st.world = st.keyframe.gray, st.keyframe.pts2d, st.keyframe.world
            return TrackResult(prior, ok=False, keyframe=False, reason=reason, segment=st.segment)
        relocalised = relocalised or st.lost
        st.lost, st.lost_count = False, 0
        if relocalised:
            self.counters["relocalised"] += 1
        assert keep is not None
        st.velocity = invert(st.pose) @ pose
        st.velocity_dt = dt if dt and dt > 0 else 0.0
        st.pose, st.t = pose, t
        st.gray, st.pts2d, st.world = gray, keep[0], keep[1]
        if self._needs_keyframe(pose, len(keep[0])):
            return self._start(gray, depth, pose, inliers=inliers, relocalised=relocalised)
        return TrackResult(pose, ok=True, keyframe=False, inliers=inliers, relocalised=relocalised,
                           segment=st.segment)

    def status(self) -> dict[str, int]:
        return {**self.counters, "segment": self.state.segment}

    def _new_segment(self, gray: np.ndarray, depth: np.ndarray, pose: np.ndarray, reason: str) -> TrackResult:
        st = self.state
        had_map = st.keyframe is not None
        old_kf = st.keyframe
        st.keyframe = None
        self._start(gray, depth, pose)
        if st.keyframe is None:  # still nothing to anchor on: keep trying from the old keyframe
            st.keyframe = old_kf
            return TrackResult(pose, ok=False, keyframe=False, reason=reason, segment=st.segment)
        if had_map:
            st.segment += 1
            self.counters["new_segments"] += 1
        st.lost, st.lost_count = False, 0
        # Not ok: the pose is held, not measured; later frames track against this new anchor.
        return TrackResult(pose, ok=False, keyframe=True, reason=f"{reason}; new map segment {st.segment}",
                           segment=st.segment)

    # -- internals --------------------------------------------------------------------------------

    def _needs_keyframe(self, pose: np.ndarray, n_tracks: int) -> bool:
        kf = self.state.keyframe
        if kf is None:
            return True
        rel = invert(kf.pose) @ pose
        return (float(np.linalg.norm(rel[:3, 3])) > self.opt.kf_translation
                or rotation_angle_deg(rel[:3, :3]) > self.opt.kf_rotation_deg
                or n_tracks < self.opt.kf_min_tracks * len(kf.pts2d))

    def _start(self, gray: np.ndarray, depth: np.ndarray, pose: np.ndarray, inliers: int = 0,
               relocalised: bool = False) -> TrackResult:
        """Make this frame a keyframe: new corners, lifted to world points."""
        pts2d, cam = self._detect(gray, depth)
        if len(pts2d) < self.opt.min_inliers:
            # Not enough structure to anchor on: keep the old keyframe, report the pose anyway.
            st = self.state
            st.pose = pose if st.pose is None else st.pose
            st.gray = gray
            if st.pts2d is None:
                st.pts2d, st.world = pts2d, cam
            return TrackResult(pose, ok=st.keyframe is not None, keyframe=False, inliers=inliers,
                               reason=f"only {len(pts2d)} trackable corners with depth")
        world = cam @ pose[:3, :3].T + pose[:3, 3]
        st = self.state
        st.pose, st.gray, st.pts2d, st.world = pose, gray, pts2d, world
        st.keyframe = _Keyframe(pose.copy(), gray, pts2d, world)
        self.counters["keyframes"] += 1
        return TrackResult(pose, ok=True, keyframe=True, inliers=inliers, relocalised=relocalised,
                           segment=st.segment)

    def _detect(self, gray: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Corners (working px) with valid, locally smooth depth, and their camera-frame 3D points."""
        corners = cv2.goodFeaturesToTrack(gray, self.opt.max_features, 0.01, 7, blockSize=5)
        if corners is None:
            return np.zeros((0, 2), np.float32), np.zeros((0, 3))
        pts = corners.reshape(-1, 2).astype(np.float32)
        cam, ok = self._lift(pts, depth)
        return pts[ok], cam[ok]

    def _lift(self, pts: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Back-project working-res points with full-res depth; reject holes and depth edges."""
        s, intr = self.scale, self.intr
        u = (pts[:, 0] + 0.5) / s - 0.5
        v = (pts[:, 1] + 0.5) / s - 0.5
        ui = np.clip(np.rint(u).astype(np.int64), 1, intr.width - 2)
        vi = np.clip(np.rint(v).astype(np.int64), 1, intr.height - 2)
        offs = np.array([-1, 0, 1])
        patch = depth[vi[:, None, None] + offs[None, :, None], ui[:, None, None] + offs[None, None, :]]
        patch = patch.reshape(len(pts), 9).astype(np.float64) / self.depth_scale
        z = patch[:, 4]
        ok = (patch.min(axis=1) > 0) & (z < self.opt.depth_trunc)
        ok &= (patch.max(axis=1) - patch.min(axis=1)) < 0.02 * np.maximum(z, 1e-6) + 0.01
        cam = np.stack(((u - intr.cx) / intr.fx * z, (v - intr.cy) / intr.fy * z, z), axis=1)
        return cam, ok

    def _solve(self, ref_gray: np.ndarray, ref_pts: np.ndarray, world: np.ndarray, gray: np.ndarray,
               prior: np.ndarray) -> tuple[np.ndarray | None, int, tuple[np.ndarray, np.ndarray] | None, str]:
        """Track `ref_pts` into `gray`, PnP against `world`. (pose, inliers, (pts2d, world) kept, reason)."""
        if len(ref_pts) < self.opt.min_inliers:
            return None, 0, None, f"only {len(ref_pts)} tracks"
        w2c = invert(prior)
        rvec, _ = cv2.Rodrigues(w2c[:3, :3])
        tvec = w2c[:3, 3].copy()
        guess, _ = cv2.projectPoints(world, rvec, tvec, self.k_work, None)
        guess = guess.reshape(-1, 2).astype(np.float32)
        h, w = gray.shape
        inside = (guess[:, 0] > -50) & (guess[:, 0] < w + 50) & (guess[:, 1] > -50) & (guess[:, 1] < h + 50)
        guess = np.where(inside[:, None], guess, ref_pts)
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(
            ref_gray, gray, ref_pts.reshape(-1, 1, 2), guess.reshape(-1, 1, 2).copy(), winSize=(15, 15), maxLevel=3,
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
            criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.03))
        nxt = nxt.reshape(-1, 2)
        good = (status.reshape(-1) == 1) & (nxt[:, 0] >= 0) & (nxt[:, 0] < w) & (nxt[:, 1] >= 0) & (nxt[:, 1] < h)
        if np.count_nonzero(good) < self.opt.min_inliers:
            return None, 0, None, f"only {np.count_nonzero(good)} points tracked"
        obj, img = world[good], nxt[good].astype(np.float64)
        ok, rvec2, tvec2, inl = cv2.solvePnPRansac(
            obj, img, self.k_work, None, rvec.copy(), tvec.reshape(3, 1).copy(), useExtrinsicGuess=True,
            iterationsCount=60, reprojectionError=self.opt.reproj_px, confidence=0.99, flags=cv2.SOLVEPNP_ITERATIVE)
        n_in = 0 if inl is None else len(inl)
        if not ok or n_in < self.opt.min_inliers:
            return None, n_in, None, f"only {n_in} PnP inliers"
        idx = inl.reshape(-1)
        rvec2, tvec2 = cv2.solvePnPRefineLM(obj[idx], img[idx], self.k_work, None, rvec2, tvec2)
        w2c_new = np.eye(4)
        w2c_new[:3, :3] = cv2.Rodrigues(rvec2)[0]
        w2c_new[:3, 3] = tvec2.reshape(3)
        keep_idx = np.flatnonzero(good)[idx]
        return invert(w2c_new), n_in, (nxt[keep_idx].astype(np.float32), world[keep_idx]), ""
