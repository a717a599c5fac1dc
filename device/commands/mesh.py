"""`crowdcap mesh SESSION_DIR -o out.glb`: fuse a recorded session (TUM layout) into a coloured mesh.

Poses come from groundtruth.txt when present (our recordings and ingested sessions write it), else
from our odometry. Keyframes are frames that moved enough since the last one; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mesh", help="fuse a session folder (TUM layout + poses) into a mesh (.glb/.ply)",
                       description=__doc__)
    p.add_argument("session", help="TUM-layout folder: rgb.txt, depth.txt, [groundtruth.txt], [camera.json]")
    p.add_argument("-o", "--output", required=True, help="output mesh: .glb, .ply or .obj")
    p.add_argument("--poses", choices=["auto", "groundtruth", "odometry"], default="auto",
                   help="where poses come from (auto: groundtruth.txt if present, else odometry)")
    p.add_argument("--voxel", type=float, default=0.02, help="TSDF voxel size in metres (default 0.02)")
    p.add_argument("--depth-trunc", type=float, default=5.0, help="ignore depth beyond this (m, default 5)")
    p.add_argument("--downscale", type=int, default=2, help="integrate at 1/N resolution (default 2)")
    p.add_argument("--max-frames", type=int, default=None, help="read at most this many frames")
    p.add_argument("--keyframe-translation", type=float, default=0.05, help="m between keyframes (default 0.05)")
    p.add_argument("--keyframe-rotation", type=float, default=5.0, help="degrees between keyframes (default 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from capture.frame import SourceError
    from depth.fusion import downscale_keyframe, fuse_keyframes, save_mesh
    from depth.odometry import Odometry, invert, rotation_angle_deg
    from depth.session import open_session
    from device.cli import CliError

    if Path(args.output).suffix.lower() not in (".glb", ".ply", ".obj"):
        raise CliError(f"-o {args.output}: expected a .glb, .ply or .obj file name")
    if args.voxel <= 0 or args.depth_trunc <= 0 or args.downscale < 1:
        raise CliError("--voxel and --depth-trunc must be positive, --downscale at least 1")
    try:
        src = open_session(args.session, args.max_frames)
    except ValueError as e:
        raise CliError(str(e)) from None
    use_truth = args.poses == "groundtruth" or (args.poses == "auto" and src.groundtruth is not None)
    if args.poses == "groundtruth" and src.groundtruth is None:
        raise CliError(f"{args.session}: no groundtruth.txt (use --poses odometry)")
    odometry: Odometry | None = None
    keyframes, last, n_read, skipped = [], None, 0, 0
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"mesh: {msg}", file=sys.stderr, flush=True)

    try:
        while (f := src.read()) is not None:
            n_read += 1
            if use_truth:
                pose = f.attachments.get("truth", {}).get("pose")
                if pose is None:
                    skipped += 1
                    continue
            else:
                if odometry is None:
                    odometry = Odometry(f.intrinsics, f.depth_scale)
                result = odometry.track(f.color, f.depth)
                if not result.ok:
                    skipped += 1
                    continue
                pose = result.pose
            if last is not None:
                rel = invert(last) @ pose
                if (np.linalg.norm(rel[:3, 3]) < args.keyframe_translation
                        and rotation_angle_deg(rel[:3, :3]) < args.keyframe_rotation):
                    continue
            last = pose
            keyframes.append(downscale_keyframe(pose, f.color, f.depth, f.intrinsics, f.depth_scale,
                                                args.downscale, f.seq))
            if len(keyframes) % 10 == 1:
                say(f"read {n_read} frames, {len(keyframes)} keyframes")
    except (ValueError, SourceError) as e:
        raise CliError(str(e)) from None
    finally:
        src.close()
    if not keyframes:
        raise CliError(f"{args.session}: no posed frames to fuse ({n_read} read, {skipped} without a pose)")
    say(f"{n_read} frames read, {skipped} without a pose; fusing {len(keyframes)} keyframes "
        f"(poses from {'groundtruth.txt' if use_truth else 'our odometry'})")
    mesh = fuse_keyframes(keyframes, voxel_size=args.voxel, depth_trunc=args.depth_trunc,
                          progress=lambda k: say(f"integrated {k}/{len(keyframes)}") if k % 20 == 0 else None)
    try:
        save_mesh(mesh, args.output)
    except ValueError as e:
        raise CliError(str(e)) from None
    say(f"{args.output}: {len(mesh.vertices)} vertices, {len(mesh.triangles)} triangles "
        f"in {time.monotonic() - t0:.1f} s")
    return 0
