"""The `[depth]` config section."""

from __future__ import annotations

from dataclasses import dataclass

from capture.configcore import setting


@dataclass
class DepthConfig:
    enabled: bool = setting(True, help="run odometry, keyframes and clouds")
    depth_trunc: float = setting(8.0, min=0.1, max=20.0, help="ignore depth beyond this many metres (clouds, odometry, fusion); the demo room is 7.4 m deep")
    odometry_width: int = setting(320, min=80, max=1920, help="odometry works on images this wide")
    keyframe_translation: float = setting(0.10, min=0.01, max=5.0, help="new keyframe after this motion (m)")
    keyframe_rotation_deg: float = setting(8.0, min=0.5, max=90.0, help="new keyframe after this rotation (deg)")
    cloud_max_points: int = setting(20000, min=100, max=1_000_000, help="max points in a keyframe cloud")
    max_keyframes: int = setting(120, min=1, max=10000, help="keyframes kept in memory for fusion")
    fusion_downscale: int = setting(2, min=1, max=8, help="keyframes are kept at 1/N resolution for fusion")
    fusion_voxel_size: float = setting(0.02, min=0.002, max=0.5, help="TSDF voxel size (m)")
