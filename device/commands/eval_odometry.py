"""`crowdcap eval-odometry DIR`: run our odometry over a TUM-layout folder, score it against
groundtruth.txt, print JSON (ATE RMSE after rigid alignment, RPE, ms per frame)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-odometry", help="score our odometry on a TUM-layout folder with groundtruth.txt",
                       description=__doc__)
    p.add_argument("dir", help="TUM-layout folder with groundtruth.txt (camera.json optional: TUM defaults)")
    p.add_argument("--max-frames", type=int, default=None, help="use at most this many frames")
    p.add_argument("--open3d", action="store_true",
                   help="also run Open3D's compute_rgbd_odometry (hybrid) side by side (slow: ~0.5 s/frame)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from capture.frame import SourceError
    from depth.evaluate import evaluate_sequence
    from depth.session import open_session
    from device.cli import CliError

    if args.max_frames is not None and args.max_frames < 2:
        raise CliError("--max-frames: expected at least 2")
    try:
        src = open_session(args.dir, args.max_frames)
        if src.groundtruth is None:
            raise CliError(f"{args.dir}: no groundtruth.txt to score against")
        try:
            report = evaluate_sequence(iter(src.read, None), open3d=args.open3d)  # streamed: long sequences fit
        finally:
            src.close()
    except (ValueError, SourceError) as e:
        raise CliError(str(e)) from None
    report = {"dir": str(args.dir), **report}
    print(json.dumps(report, indent=2))
    return 0
