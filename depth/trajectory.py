"""Trajectory error metrics: ATE RMSE after rigid (Horn/Umeyama) alignment, and RPE."""

from __future__ import annotations

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """(R, t, s) minimising ||dst - (s R src + t)||² over N×3 point sets (Umeyama 1991)."""
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 1:
        raise ValueError(f"umeyama: expected two N×3 arrays of the same shape, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    r = u @ sign @ vt
    var_s = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(d) @ sign) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * r @ mu_s
    return r, t, s


def ate_rmse(estimated: np.ndarray, truth: np.ndarray) -> float:
    """Absolute trajectory error (m): RMSE of camera positions after the best rigid alignment.

    estimated, truth: N×4×4 camera-to-world poses of the same N frames.
    """
    est, gt = _positions(estimated), _positions(truth)
    if len(est) != len(gt):
        raise ValueError(f"ate: {len(est)} estimated poses but {len(gt)} ground-truth poses")
    if len(est) < 2:
        return 0.0
    r, t, _ = umeyama(est, gt)
    err = gt - (est @ r.T + t)
    return float(np.sqrt((err ** 2).sum(1).mean()))


def rpe(estimated: np.ndarray, truth: np.ndarray, delta: int = 1) -> dict[str, float]:
    """Relative pose error over `delta`-frame steps: translation RMSE (m) and rotation RMSE (deg)."""
    est, gt = np.asarray(estimated), np.asarray(truth)
    if est.shape != gt.shape:
        raise ValueError(f"rpe: {est.shape} estimated vs {gt.shape} ground truth")
    if len(est) <= delta:
        return {"trans_rmse_m": 0.0, "rot_rmse_deg": 0.0, "delta_frames": delta}
    rel_e = np.linalg.inv(est[:-delta]) @ est[delta:]
    rel_g = np.linalg.inv(gt[:-delta]) @ gt[delta:]
    err = np.linalg.inv(rel_g) @ rel_e
    trans = np.linalg.norm(err[:, :3, 3], axis=1)
    cos = np.clip((np.trace(err[:, :3, :3], axis1=1, axis2=2) - 1) / 2, -1, 1)
    rot = np.degrees(np.arccos(cos))
    return {"trans_rmse_m": float(np.sqrt((trans ** 2).mean())), "rot_rmse_deg": float(np.sqrt((rot ** 2).mean())),
            "delta_frames": delta}


def _positions(poses: np.ndarray) -> np.ndarray:
    p = np.asarray(poses, dtype=np.float64)
    if p.ndim != 3 or p.shape[1:] != (4, 4):
        raise ValueError(f"expected N×4×4 poses, got shape {p.shape}")
    return p[:, :3, 3]
