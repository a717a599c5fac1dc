"""`crowdcap export SESSION --mcap OUT.mcap`: a session (recording or ingested) as MCAP for Foxglove.

Colour (CompressedImage), depth (RawImage, 32FC1 metres), calibration, the trajectory as
FrameTransforms, keyframe clouds (PointCloud, world frame) and redaction regions (SceneUpdate), with
Foxglove's well-known schema names (JSON encoding). Topics and frames: uplink/backend/export.py and
docs/frames.md.
"""

from __future__ import annotations

import argparse
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a session folder as MCAP (Foxglove)", description=__doc__)
    p.add_argument("session", help="session folder (TUM layout: a recording or an ingested session)")
    p.add_argument("--mcap", required=True, metavar="OUT.mcap", help="output MCAP file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from capture.frame import SourceError
    from device.cli import CliError
    from device.progress import words
    from uplink.backend.export import export_mcap

    out = Path(args.mcap)
    if out.suffix.lower() != ".mcap":
        raise CliError(f"--mcap {out}: expected a .mcap file name")
    if not out.parent.is_dir():
        raise CliError(f"--mcap {out}: folder {out.parent} does not exist")
    t0 = time.monotonic()
    try:
        counts = export_mcap(args.session, out)
    except (ValueError, SourceError) as e:
        raise CliError(str(e)) from None
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB in {time.monotonic() - t0:.1f} s; messages: {words(counts)}",
          file=sys.stderr)
    return 0
