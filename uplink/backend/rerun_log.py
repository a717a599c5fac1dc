"""Log a session folder to Rerun (`crowdcap view`): the `rerun-sdk` package, an optional extra.

Entities: world/camera (Transform3D = the device's pose estimate; Pinhole), world/camera/image
(redacted colour), world/camera/depth (DepthImage, metres), world/camera/image/redactions (Boxes2D
with class labels), world/clouds (keyframe clouds, world frame), world/groundtruth (truth positions,
when the session has real ground truth). Timeline "capture" is the capture time (UTC). The world is
ours (OpenCV axes: y down), declared with ViewCoordinates RDF so Rerun shows it upright.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from capture import tum


def log_session(session: str | Path, out: Path | None) -> int:
    """Log every frame of `session`; save to `out` (.rrd) or, when None, spawn the viewer. Returns frames."""
    import rerun as rr

    from capture.replay import ReplaySource
    from uplink.backend.export import _nearest, _read_jsonl

    root = Path(session)
    src = ReplaySource(root, pace="fast")
    traj = tum.read_groundtruth(root / "trajectory.txt") if (root / "trajectory.txt").is_file() else None
    keys = tum.read_groundtruth(root / "keyframes.txt")[0] if (root / "keyframes.txt").is_file() else np.zeros(0)
    manifests = _read_jsonl(root / "manifests.jsonl")
    m_stamps = np.array([float(m.get("t", -1)) for m in manifests])
    rec = rr.RecordingStream("crowdcap", recording_id=f"{root.parent.name}/{root.name}")
    if out is None:
        rec.spawn()
    else:
        rec.save(str(out))
    intr = src.intrinsics
    rec.log("world", rr.ViewCoordinates.RDF, static=True)  # x right, y down, z forward (docs/frames.md)
    rec.log("world/camera", rr.Pinhole(focal_length=[intr.fx, intr.fy], principal_point=[intr.cx, intr.cy],
                                       width=intr.width, height=intr.height, camera_xyz=rr.ViewCoordinates.RDF),
            static=True)
    truth_path: list[list[float]] = []
    n = 0
    src.open()
    try:
        while (f := src.read()) is not None:
            rec.set_time("capture", timestamp=f.t_utc)
            pose = _nearest(traj[0], list(traj[1]), f.t_utc) if traj is not None else None
            if pose is not None:
                rec.log("world/camera", rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]))
            rec.log("world/camera/image", rr.Image(f.color[:, :, ::-1]))
            rec.log("world/camera/depth", rr.DepthImage(f.depth.astype(np.float32) / np.float32(src.depth_scale),
                                                        meter=1.0))
            entry = _nearest(m_stamps, manifests, f.t_utc)
            manifest = entry.get("manifest") if isinstance(entry, dict) else None
            regions = [r for r in (manifest or {}).get("regions") or [] if isinstance(r, dict)
                       and isinstance(r.get("bbox"), list) and len(r["bbox"]) == 4]
            if manifest is not None:
                rec.log("world/camera/image/redactions", rr.Boxes2D(
                    array=np.array([r["bbox"] for r in regions], np.float32).reshape(-1, 4),
                    array_format=rr.Box2DFormat.XYXY, labels=[str(r.get("class", "?")) for r in regions]))
                rec.log("world/camera/manifest", rr.TextDocument(json.dumps(manifest, indent=1, default=str)))
            truth = (f.attachments.get("truth") or {}).get("pose")
            if truth is not None:
                truth_path.append([float(v) for v in np.asarray(truth)[:3, 3]])
                rec.log("world/groundtruth", rr.LineStrips3D([truth_path]))
            if pose is not None and len(keys) and np.min(np.abs(keys - f.t_utc)) <= tum.ASSOCIATION_MAX_DT:
                from depth.cloud import back_project

                c = back_project(f.depth, f.intrinsics, f.depth_scale, f.color, depth_trunc=8.0, stride=4)
                if len(c):
                    world = c.points @ pose[:3, :3].T + pose[:3, 3]
                    rec.log(f"world/clouds/{f.seq}", rr.Points3D(world, colors=c.colors))
            n += 1
    finally:
        src.close()
        rec.flush()
        if out is not None:
            rec.disconnect()
    return n
