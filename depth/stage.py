"""The `depth` pipeline stage: pose every frame, pick keyframes, attach small clouds to keyframes.

Per frame: odometry on a downscaled grey image (~1–3 ms). Per keyframe: a strided back-projection
(≤ `cloud_max_points`) and a downscaled copy kept for fusion. Owns no threads; fusion runs on demand
(`DepthStage.fuse()`), off the hot path.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any

import numpy as np

from capture.frame import Intrinsics, RGBDFrame
from depth.cloud import back_project
from depth.config import DepthConfig
from depth.fusion import FusionKeyframe, downscale_keyframe, fuse_keyframes
from depth.odometry import Odometry, OdometryOptions


class DepthStage:
    name = "depth"

    def __init__(self, cfg: DepthConfig) -> None:
        self.cfg = cfg
        self.keyframes: deque[FusionKeyframe] = deque(maxlen=cfg.max_keyframes)
        self._odometry: Odometry | None = None
        self._camera: tuple[Intrinsics, float, str] | None = None
        self.counters = {"frames": 0, "keyframes": 0, "tracking_lost": 0, "relocalised": 0, "cloud_points": 0}

    def apply(self, frame: RGBDFrame) -> RGBDFrame:
        if not self.cfg.enabled:
            return frame
        camera = (frame.intrinsics, frame.depth_scale, frame.session_id)
        if self._odometry is None or camera != self._camera:
            # A new camera or session starts a new map at the origin.
            self._odometry = Odometry(frame.intrinsics, frame.depth_scale, OdometryOptions(
                work_width=self.cfg.odometry_width, depth_trunc=self.cfg.depth_trunc,
                kf_translation=self.cfg.keyframe_translation, kf_rotation_deg=self.cfg.keyframe_rotation_deg))
            self._camera = camera
        result = self._odometry.track(frame.color, frame.depth, frame.seq)  # seq: gaps = dropped frames
        self.counters["frames"] += 1
        self.counters["tracking_lost"] += not result.ok
        self.counters["relocalised"] += result.relocalised
        attachments = dict(frame.attachments)
        attachments["odometry"] = {"ok": result.ok, "inliers": result.inliers, "relocalised": result.relocalised,
                                   "segment": result.segment, **({"reason": result.reason} if result.reason else {})}
        if result.keyframe:
            self.counters["keyframes"] += 1
            attachments["cloud"] = self._cloud(frame)
            kf = downscale_keyframe(result.pose, frame.color, frame.depth, frame.intrinsics, frame.depth_scale,
                                    self.cfg.fusion_downscale, frame.seq)
            kf.segment = result.segment
            self.keyframes.append(kf)
        return frame.replace(pose=result.pose, keyframe=result.keyframe, attachments=attachments)

    def _cloud(self, frame: RGBDFrame) -> dict[str, np.ndarray]:
        """A camera-frame cloud strided down to at most `cloud_max_points` points."""
        valid = int(np.count_nonzero(frame.depth))
        stride = max(1, math.ceil(math.sqrt(valid / self.cfg.cloud_max_points))) if valid else 1
        cloud = back_project(frame.depth, frame.intrinsics, frame.depth_scale, frame.color,
                             depth_trunc=self.cfg.depth_trunc, stride=stride)
        points, colors = cloud.points.astype(np.float32), cloud.colors
        if len(points) > self.cfg.cloud_max_points:
            step = math.ceil(len(points) / self.cfg.cloud_max_points)
            points, colors = points[::step], colors[::step]
        self.counters["cloud_points"] += len(points)
        return {"points": np.ascontiguousarray(points), "colors": np.ascontiguousarray(colors)}

    def fuse(self, **kwargs: Any) -> Any:
        """Fuse the kept keyframes into an open3d TriangleMesh (slow: call off the hot path).

        Only the map segment with the most keyframes: poses of different segments are not related.
        """
        keyframes = list(self.keyframes)
        if keyframes:
            counts = Counter(kf.segment for kf in keyframes)
            best = max(counts, key=lambda seg: (counts[seg], seg))
            keyframes = [kf for kf in keyframes if kf.segment == best]
        return fuse_keyframes(keyframes, voxel_size=self.cfg.fusion_voxel_size,
                              depth_trunc=self.cfg.depth_trunc, **kwargs)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters)
        out["keyframes_kept"] = len(self.keyframes)
        return out

    def close(self) -> None:
        self._odometry = None


def build_stage(cfg: DepthConfig) -> DepthStage:
    return DepthStage(cfg)
