"""A TUM-layout RGB-D folder for the replay benches, written from the synthetic source.

NOT real sensor data. No PyPI package we could find ships a real RGB-D frame set (TUM, Redwood, NYU)
and nothing may download data at run time, so `python -m bench e2e --source replay` plays this: the
synthetic renderer's 640×480 frames (faces, text, noise, holes), written exactly as TUM does it —
rgb/*.png, depth/*.png at 5000 units per metre, rgb.txt, depth.txt, groundtruth.txt, camera.json.
A real sequence (e.g. TUM fr1/xyz) drops in with `--replay-dir DIR`.

The frames are written forth and back (0 … N-1, N-2 … 1) with rising timestamps, so a looped replay
moves the camera continuously: odometry sees no jump at the seam, as on a long real walk.
"""

from __future__ import annotations

from pathlib import Path

import cv2

from capture import tum
from capture.synthetic import SyntheticSource


def write_synthetic_tum(out: Path, frames: int = 60, fps: float = 30.0, width: int = 640, height: int = 480,
                        seed: int = 0) -> Path:
    """Write a TUM-layout folder of `2 * frames - 2` frames (forth and back) into `out`; returns `out`."""
    if frames < 2:
        raise ValueError(f"frames: expected at least 2, got {frames}")
    source = SyntheticSource(width, height, fps, seed, pace="fast")
    source.open()
    (out / "rgb").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(exist_ok=True)
    tum.write_camera_json(out / "camera.json", source.intrinsics, tum.TUM_DEPTH_SCALE)
    order = list(range(frames)) + list(range(frames - 2, 0, -1))
    rgb_lines, depth_lines, gt_lines = [], [], []
    rendered: dict[int, tuple[str, str]] = {}
    for n, k in enumerate(order):
        ts = f"{1_700_000_000 + n / fps:.6f}"
        if k not in rendered:
            color, depth, truth = source.render(k)
            rgb_name, depth_name = f"rgb/{k:05d}.png", f"depth/{k:05d}.png"
            if not (cv2.imwrite(str(out / rgb_name), color)
                    and cv2.imwrite(str(out / depth_name), tum.to_tum_depth(depth, source.depth_scale))):
                raise OSError(f"{out}: cannot write the images (disk full or not writable?)")
            rendered[k] = (rgb_name, depth_name)
            gt_lines.append((k, truth["pose"]))
        rgb_name, depth_name = rendered[k]
        rgb_lines.append(f"{ts} {rgb_name}\n")
        depth_lines.append(f"{ts} {depth_name}\n")
    poses = dict(gt_lines)
    header = "# timestamp tx ty tz qx qy qz qw\n"
    (out / "rgb.txt").write_text("# color images (synthetic, not sensor data)\n" + "".join(rgb_lines))
    (out / "depth.txt").write_text("# depth maps (synthetic, not sensor data)\n" + "".join(depth_lines))
    (out / "groundtruth.txt").write_text("# ground truth trajectory (synthetic)\n" + header + "".join(
        f"{line.split()[0]} " + " ".join(f"{v:.6f}" for v in tum.pose_to_tum(poses[k])) + "\n"
        for line, k in zip(rgb_lines, order, strict=True)))
    return out
