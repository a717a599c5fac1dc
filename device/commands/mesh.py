"""`crowdcap mesh SESSION_DIR -o out.glb`: fuse a recorded session (TUM layout) into a coloured mesh.

Poses (--poses auto): groundtruth.txt (real ground truth) when present, else trajectory.txt (the
device's estimates: our recordings and ingested sessions write it), else our odometry. Keyframes: the
device's own (keyframes.txt) when the session has them and the poses are the device's, else frames that
moved enough since the last one (the device's defaults: 0.1 m / 8°). A .glb is Y-up (docs/frames.md).
Progress goes to stderr.
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
    p.add_argument("--poses", choices=["auto", "groundtruth", "trajectory", "odometry"], default="auto",
                   help="where poses come from (auto: groundtruth.txt, else trajectory.txt, else odometry)")
    p.add_argument("--voxel", type=float, default=0.02, help="TSDF voxel size in metres (default 0.02)")
    p.add_argument("--depth-trunc", type=float, default=8.0, help="ignore depth beyond this (m, default 8)")
    p.add_argument("--downscale", type=int, default=2, help="integrate at 1/N resolution (default 2)")
    p.add_argument("--max-frames", type=int, default=None, help="read at most this many frames")
    p.add_argument("--keyframes", choices=["auto", "device", "motion"], default="auto",
                   help="auto: the device's (keyframes.txt) when present and poses are the device's; motion: "
                        "chosen here by --keyframe-translation / --keyframe-rotation")
    p.add_argument("--texture", type=int, nargs="?", const=1024, default=None, metavar="SIZE",
                   help="bake a UV texture atlas (SIZE×SIZE, default 1024) from the keyframes' redacted colour "
                        "into the .glb (instead of vertex colours)")
    p.add_argument("--keyframe-translation", type=float, default=0.10, help="m between keyframes (default 0.1)")
    p.add_argument("--keyframe-rotation", type=float, default=8.0, help="degrees between keyframes (default 8)")
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
    if args.texture is not None and (Path(args.output).suffix.lower() != ".glb" or not 64 <= args.texture <= 8192):
        raise CliError("--texture: a textured mesh is written as .glb, with SIZE 64-8192")
    if args.voxel <= 0 or args.depth_trunc <= 0 or args.downscale < 1:
        raise CliError("--voxel and --depth-trunc must be positive, --downscale at least 1")
    try:
        src = open_session(args.session, args.max_frames)
    except ValueError as e:
        raise CliError(str(e)) from None
    from capture import tum

    session = Path(args.session)
    source = args.poses
    if source == "auto":
        source = ("groundtruth" if src.groundtruth is not None
                  else "trajectory" if (session / "trajectory.txt").is_file() else "odometry")
    if source == "groundtruth" and src.groundtruth is None:
        raise CliError(f"{args.session}: no groundtruth.txt (use --poses trajectory or odometry)")
    if source == "trajectory" and not (session / "trajectory.txt").is_file():
        raise CliError(f"{args.session}: no trajectory.txt (use --poses odometry)")
    use_truth = source == "groundtruth"
    stamped = None  # (timestamps, poses) read from a file
    try:
        if source == "trajectory":
            stamped = tum.read_groundtruth(session / "trajectory.txt")
        device_keys = None
        kf_file = session / "keyframes.txt"
        if args.keyframes == "device" and not kf_file.is_file():
            raise CliError(f"{args.session}: no keyframes.txt (the device's keyframes); use --keyframes motion")
        if args.keyframes == "device" or (args.keyframes == "auto" and kf_file.is_file() and source != "odometry"):
            device_keys = tum.read_groundtruth(kf_file)[0]
    except ValueError as e:
        raise CliError(str(e)) from None
    odometry: Odometry | None = None
    keyframes, last, n_read, skipped = [], None, 0, 0
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"mesh: {msg}", file=sys.stderr, flush=True)

    try:
        while (f := src.read()) is not None:
            n_read += 1
            if device_keys is not None and (len(device_keys) == 0 or np.min(np.abs(device_keys - f.t_utc))
                                            > tum.ASSOCIATION_MAX_DT):
                continue  # not one of the device's keyframes
            if use_truth or stamped is not None:
                pose = f.attachments.get("truth", {}).get("pose") if use_truth else _pose_at(stamped, f.t_utc)
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
            if last is not None and device_keys is None:
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
    source_names = {"groundtruth": "groundtruth.txt", "trajectory": "trajectory.txt (device estimates)",
                    "odometry": "our odometry"}
    if not keyframes:
        raise CliError(f"{args.session}: no posed frames to fuse ({n_read} read, {skipped} without a pose)")
    say(f"{n_read} frames read, {skipped} without a pose; fusing {len(keyframes)} keyframes "
        f"(poses from {source_names[source]}, keyframes "
        f"{'of the device (keyframes.txt)' if device_keys is not None else 'chosen by motion'})")
    mesh = fuse_keyframes(keyframes, voxel_size=args.voxel, depth_trunc=args.depth_trunc,
                          progress=lambda k: say(f"integrated {k}/{len(keyframes)}") if k % 20 == 0 else None)
    try:
        if args.texture is not None and len(mesh.triangles):
            from depth.texture import save_textured_glb, texture_mesh

            say(f"baking a {args.texture}×{args.texture} texture from {len(keyframes)} keyframes…")
            textured = texture_mesh(mesh, keyframes, tex_size=args.texture)
            save_textured_glb(args.output, textured)
            say(f"texture: {textured.atlas} atlas, {len(textured.triangles)} triangles, seconds "
                + ", ".join(f"{k} {v:.1f}" for k, v in textured.seconds.items()))
        else:
            save_mesh(mesh, args.output)
    except ValueError as e:
        raise CliError(str(e)) from None
    say(f"{args.output}: {len(mesh.vertices)} vertices, {len(mesh.triangles)} triangles "
        f"in {time.monotonic() - t0:.1f} s")
    return 0


def _pose_at(stamped, t: float):  # type: ignore[no-untyped-def]
    """The pose stamped nearest `t` (within TUM's 20 ms association window), else None."""
    import numpy as np

    from capture.tum import ASSOCIATION_MAX_DT

    stamps, poses = stamped
    if len(stamps) == 0:
        return None
    j = int(np.argmin(np.abs(stamps - t)))
    return poses[j] if abs(stamps[j] - t) <= ASSOCIATION_MAX_DT else None
