"""Score odometry on a posed sequence: ours, and optionally Open3D's hybrid RGB-D odometry side by side."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from capture.frame import RGBDFrame
from depth.odometry import Odometry
from depth.trajectory import ate_rmse, rpe


def _timing(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms) if ms else np.zeros(1)
    return {"median": round(float(np.median(a)), 3), "mean": round(float(a.mean()), 3),
            "p95": round(float(np.percentile(a, 95)), 3)}


def _score(est: list[np.ndarray], truth: list[np.ndarray | None]) -> dict[str, Any]:
    pairs = [(e, t) for e, t in zip(est, truth, strict=True) if t is not None]
    if len(pairs) < 2:
        return {"scored_frames": len(pairs), "ate_rmse_m": None, "rpe": None}
    e, t = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return {"scored_frames": len(pairs), "ate_rmse_m": round(ate_rmse(e, t), 5), "rpe": rpe(e, t)}


class Open3DOdometry:
    """Open3D's `compute_rgbd_odometry` (hybrid term, default options), chained frame to frame."""

    def __init__(self, depth_trunc: float = 4.0) -> None:
        import open3d as o3d

        self.o3d = o3d
        self.depth_trunc = depth_trunc
        self.prev: Any = None
        self.pose = np.eye(4)
        self.failures = 0

    def track(self, f: RGBDFrame) -> np.ndarray:
        o3d = self.o3d
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(f.color[:, :, ::-1])), o3d.geometry.Image(f.depth),
            depth_scale=f.depth_scale, depth_trunc=self.depth_trunc)
        if self.prev is not None:
            i = f.intrinsics
            pin = o3d.camera.PinholeCameraIntrinsic(i.width, i.height, i.fx, i.fy, i.cx, i.cy)
            ok, trans, _ = o3d.pipelines.odometry.compute_rgbd_odometry(
                rgbd, self.prev, pin, np.eye(4), o3d.pipelines.odometry.RGBDOdometryJacobianFromHybridTerm(),
                o3d.pipelines.odometry.OdometryOption())
            if ok:
                self.pose = self.pose @ trans  # trans maps current-camera points into the previous camera
            else:
                self.failures += 1
        self.prev = rgbd
        return self.pose.copy()


def evaluate_sequence(frames: Iterable[RGBDFrame], *, open3d: bool = False,
                      open3d_max_frames: int | None = None) -> dict[str, Any]:
    """Run odometry over `frames` (ground truth in attachments['truth']['pose']) and score it."""
    odo: Odometry | None = None
    est, truth, ms = [], [], []
    o3d_odo = Open3DOdometry() if open3d else None
    o3d_est, o3d_truth, o3d_ms = [], [], []
    n = 0
    for f in frames:
        if odo is None:
            odo = Odometry(f.intrinsics, f.depth_scale)
        t = time.perf_counter()
        result = odo.track(f.color, f.depth, f.seq)
        ms.append((time.perf_counter() - t) * 1e3)
        est.append(result.pose)
        gt = f.attachments.get("truth", {}).get("pose")
        truth.append(gt)
        if o3d_odo is not None and (open3d_max_frames is None or n < open3d_max_frames):
            t = time.perf_counter()
            o3d_est.append(o3d_odo.track(f))
            o3d_ms.append((time.perf_counter() - t) * 1e3)
            o3d_truth.append(gt)
        n += 1
    if odo is None:
        raise ValueError("no frames to evaluate")
    report: dict[str, Any] = {"frames": n, **_score(est, truth), "ms_per_frame": _timing(ms[1:]),
                              "odometry": odo.status()}
    if o3d_odo is not None:
        # Ours on exactly the frames Open3D saw, for a like-for-like ATE.
        k = len(o3d_est)
        report["open3d_hybrid"] = {"frames": k, **_score(o3d_est, o3d_truth), "ms_per_frame": _timing(o3d_ms[1:]),
                                   "failures": o3d_odo.failures}
        report["ours_on_same_frames"] = _score(est[:k], truth[:k])
    return report
