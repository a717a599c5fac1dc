"""3D on the device: lossless depth codecs, back-projection, odometry and keyframes, TSDF fusion."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy so `import depth.codec` (the uplink and ingest) does not pull in OpenCV-heavy modules.
    if name in ("build_stage", "DepthStage"):
        from depth import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'depth' has no attribute {name!r}")
