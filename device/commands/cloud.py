"""`crowdcap cloud COLOR DEPTH [--camera camera.json] -o out.ply`: one RGB-D frame → coloured point cloud.

Without --camera, the camera.json beside the images or in a folder above them (a session's rgb/ and
depth/ sit one level below it) is used; with none there, the command refuses rather than guess the
depth scale (`--camera tum` takes TUM's Kinect defaults explicitly). Points are in the camera frame
(docs/frames.md)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cloud", help="back-project one colour + depth image pair to a PLY point cloud",
                       description=__doc__)
    p.add_argument("color", help="colour image (PNG/JPEG)")
    p.add_argument("depth", help="16-bit depth PNG, registered to the colour image (0 = no data)")
    p.add_argument("--camera", default=None,
                   help="camera.json ({width,height,fx,fy,cx,cy,depth_scale} or Open3D's), or 'tum' for TUM's "
                        "Kinect defaults; default: the camera.json beside or above the images")
    p.add_argument("-o", "--output", required=True, help="output .ply")
    p.add_argument("--depth-trunc", type=float, default=5.0, help="ignore depth beyond this many metres (default 5)")
    p.add_argument("--voxel", type=float, default=0.0, help="voxel size in metres for downsampling (default: off)")
    p.add_argument("--normals", action="store_true", help="also write normals")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from depth.cloud import back_project, write_ply
    from depth.session import load_camera, read_color_depth
    from device.cli import CliError

    if not args.output.lower().endswith(".ply"):
        raise CliError(f"-o {args.output}: expected a .ply file name")
    if args.depth_trunc <= 0 or args.voxel < 0:
        raise CliError("--depth-trunc must be positive and --voxel not negative")
    camera = args.camera
    if camera is None:
        camera = find_camera(args.color, args.depth)
        if camera is None:
            raise CliError(f"no camera.json beside or above {args.color} or {args.depth}: pass --camera FILE "
                           "(or --camera tum for TUM's Kinect defaults, depth scale 5000)")
        print(f"cloud: camera from {camera}", file=sys.stderr)
    args.camera = None if camera == "tum" else str(camera)
    try:
        intr, scale = load_camera(args.camera)
        color, depth = read_color_depth(args.color, args.depth)
        if (depth.shape[1], depth.shape[0]) != (intr.width, intr.height):
            raise ValueError(f"{args.depth}: images are {depth.shape[1]}×{depth.shape[0]} but the camera "
                             f"{args.camera or '(TUM default)'} is {intr.width}×{intr.height}")
        cloud = back_project(depth, intr, scale, color, depth_trunc=args.depth_trunc, voxel_size=args.voxel,
                             normals=args.normals)
    except ValueError as e:
        raise CliError(str(e)) from None
    if len(cloud) == 0:
        raise CliError(f"{args.depth}: no valid depth (all zero or beyond --depth-trunc {args.depth_trunc} m)")
    try:
        write_ply(args.output, cloud.points, cloud.colors, cloud.normals)
    except OSError as e:
        raise CliError(f"{args.output}: cannot write ({e.strerror})") from None
    print(f"{args.output}: {len(cloud)} points", file=sys.stderr)
    return 0


def find_camera(*images: str, levels: int = 2):  # type: ignore[no-untyped-def]
    """The nearest camera.json in an image's folder or up to `levels` folders above it, else None."""
    from pathlib import Path

    for image in images:
        folder = Path(image).resolve().parent
        for _ in range(levels + 1):
            if (folder / "camera.json").is_file():
                return folder / "camera.json"
            folder = folder.parent
    return None
