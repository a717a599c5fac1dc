"""Proposals the policy file cannot carry: private exemplars and world-anchored volumes (issue 12's
`crowdcap privacy add-object` / `add-volume` on the device the region came from).

For consensus-private leaks of a class no loaded detector finds (and no new text form covers):
- **exemplars**: crops of the region from the sent JPEGs — pixels that were sent un-redacted; any
  redacted box is painted grey first, and a crop more than 20 % painted is not used;
- **volumes**: the same region tagged in ≥ `MIN_FRAMES` posed frames of one session is placed in the
  session's world: its pixels with depth (the leak's depth was sent too) are back-projected with the
  frame's intrinsics and camera-to-world pose; frames whose points agree (centroids within
  `JOIN_M`) form one volume, a box over the 2-98 % range of their points plus `PAD_M` on each side.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from uplink.backend.tags.consensus import Region
from uplink.backend.tags.sessions import FrameRec, Sessions

MIN_FRAMES = 3
JOIN_M = 0.5
PAD_M = 0.05
MAX_EXEMPLARS = 6
MAX_PAINTED = 0.2


def object_name(cls: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", cls.removeprefix("custom:").lower())[:32].strip("_") or "object"


def world_points(rec: FrameRec, bbox: tuple[float, ...], camera: dict[str, Any]) -> np.ndarray | None:
    """World points (N×3) of the region's pixels with depth near its median; None without pose or depth."""
    pose = rec.pose()
    depth = rec.depth()
    try:
        fx, fy, cx, cy = (float(camera[k]) for k in ("fx", "fy", "cx", "cy"))
        scale = float(camera.get("depth_scale") or 1000.0)
    except (KeyError, TypeError, ValueError):
        return None
    if pose is None or depth is None or depth.ndim != 2:
        return None
    h, w = depth.shape
    bw, bh = bbox[2] - bbox[0], bbox[3] - bbox[1]
    x1, y1 = max(0, int(bbox[0] + 0.1 * bw)), max(0, int(bbox[1] + 0.1 * bh))
    x2, y2 = min(w, int(np.ceil(bbox[2] - 0.1 * bw))), min(h, int(np.ceil(bbox[3] - 0.1 * bh)))
    if x2 <= x1 or y2 <= y1:
        return None
    z = depth[y1:y2, x1:x2].astype(np.float64) / scale
    vs, us = np.nonzero(z > 0)
    if len(vs) < 10:
        return None
    zs = z[vs, us]
    keep = np.abs(zs - np.median(zs)) < 0.25  # the tagged surface, not what peeks around it
    us, vs, zs = us[keep] + x1, vs[keep] + y1, zs[keep]
    cam = np.stack([(us - cx) / fx * zs, (vs - cy) / fy * zs, zs], axis=1)
    return cam @ pose[:3, :3].T + pose[:3, 3]


def volumes(regions: list[Region], sessions: Sessions) -> list[dict[str, Any]]:
    by_session: dict[tuple[str, str, str], list[tuple[Region, np.ndarray]]] = defaultdict(list)
    for r in regions:
        rec = sessions.get(r.frame)
        if rec is None:
            continue
        pts = world_points(rec, r.bbox, sessions.camera(rec.device, rec.session))
        if pts is not None and len(pts):
            by_session[(rec.device, rec.session, r.cls)].append((r, pts))
    out = []
    for (device, session, cls), items in sorted(by_session.items()):
        clusters: list[list[tuple[Region, np.ndarray]]] = []
        for item in items:
            c = item[1].mean(axis=0)
            for cl in clusters:
                if np.linalg.norm(np.concatenate([p for _, p in cl]).mean(axis=0) - c) < JOIN_M:
                    cl.append(item)
                    break
            else:
                clusters.append([item])
        for n, cl in enumerate(c for c in clusters if len(c) >= MIN_FRAMES):
            pts = np.concatenate([p for _, p in cl])
            lo, hi = np.percentile(pts, 2, axis=0) - PAD_M, np.percentile(pts, 98, axis=0) + PAD_M
            centre, size = (lo + hi) / 2, hi - lo
            spread = float(np.median([np.linalg.norm(p.mean(axis=0) - centre) for _, p in cl]))
            name = f"{object_name(cls)}_{n + 1}"
            folder = sessions.folders[(device, session)].resolve()
            cmd = (f"crowdcap privacy add-volume {folder} --name {name} --centre "
                   + " ".join(f"{v:.3f}" for v in centre) + " --box " + " ".join(f"{v:.3f}" for v in size))
            out.append({"kind": "volume", "device": device, "session": session, "class": cls, "name": name,
                        "centre": [round(float(v), 3) for v in centre], "box": [round(float(v), 3) for v in size],
                        "frames": len(cl), "command": cmd,
                        "why": f"{cls}: tagged private in {len(cl)} posed frames of {device}/{session}, "
                               f"placed within {spread:.2f} m of each other → a {size[0]:.2f}×{size[1]:.2f}×"
                               f"{size[2]:.2f} m volume at ({centre[0]:.2f}, {centre[1]:.2f}, {centre[2]:.2f}) "
                               f"in that session's coordinates, for {device}"})
    return out


def exemplars(regions: list[Region], sessions: Sessions, out_dir: Path | None) -> list[dict[str, Any]]:
    by_cls: dict[str, list[Region]] = defaultdict(list)
    for r in regions:
        by_cls[r.cls].append(r)
    out = []
    for cls, regs in sorted(by_cls.items()):
        name = object_name(cls)
        files: list[str] = []
        for r in sorted(regs, key=lambda r: -(r.bbox[2] - r.bbox[0]) * (r.bbox[3] - r.bbox[1])):
            if len(files) >= MAX_EXEMPLARS:
                break
            crop = _sent_crop(sessions.get(r.frame), r.bbox)
            if crop is None:
                continue
            if out_dir is not None:
                (out_dir / name).mkdir(parents=True, exist_ok=True)
                path = out_dir / name / f"{r.frame[0]}-{r.frame[1]}-{r.frame[2]}.png"
                cv2.imwrite(str(path), crop)
                files.append(str(path))
            else:
                files.append(f"{r.frame[0]}/{r.frame[1]}#{r.frame[2]}")
        if not files:
            continue
        out.append({"kind": "exemplar", "class": cls, "name": name, "files": files,
                    "command": f"crowdcap privacy add-object {name} " + " ".join(files),
                    "why": f"{cls}: {len(regs)} tagged-private regions no detector finds → {len(files)} exemplar "
                           f"crops of pixels that were sent un-redacted (for the devices that saw it)"})
    return out


def _sent_crop(rec: FrameRec | None, bbox: tuple[float, ...]) -> np.ndarray | None:
    if rec is None or rec.obscured:
        return None
    img = rec.image()
    if img is None:
        return None
    h, w = img.shape[:2]
    x1, y1 = max(0, int(bbox[0])), max(0, int(bbox[1]))
    x2, y2 = min(w, int(np.ceil(bbox[2]))), min(h, int(np.ceil(bbox[3])))
    if x2 - x1 < 8 or y2 - y1 < 8:
        return None
    painted = np.zeros((h, w), bool)
    for b in rec.color_boxes():
        bx1, by1 = max(0, int(np.floor(b[0]))), max(0, int(np.floor(b[1])))
        painted[by1:max(by1, int(np.ceil(b[3]))), bx1:max(bx1, int(np.ceil(b[2])))] = True
    if painted[y1:y2, x1:x2].mean() > MAX_PAINTED:
        return None
    crop = img[y1:y2, x1:x2].copy()
    crop[painted[y1:y2, x1:x2]] = (128, 128, 128)
    return crop
