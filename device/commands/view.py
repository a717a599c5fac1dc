"""`crowdcap view SESSION [-o OUT.rrd] [--spawn]`: log a session to Rerun (the `rerun-sdk` package, an
optional extra: pip install 'crowdcap[rerun]').

Logged: the redacted colour (world/camera/image), depth (metres), the pinhole camera, the trajectory
as transforms, keyframe clouds in the world, and redaction regions as 2D boxes. Without --spawn the
recording is saved to an .rrd file (default SESSION/session.rrd) that `rerun FILE.rrd` opens.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="log a session to Rerun (.rrd; needs crowdcap[rerun])", description=__doc__)
    p.add_argument("session", help="session folder (TUM layout: a recording or an ingested session)")
    p.add_argument("-o", "--output", default=None, help="output .rrd (default: SESSION/session.rrd)")
    p.add_argument("--spawn", action="store_true", help="open the Rerun viewer instead of writing a file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from capture.frame import SourceError
    from device.cli import CliError

    try:
        import rerun  # noqa: F401
    except ImportError:
        raise CliError("crowdcap view needs the Rerun SDK: pip install 'crowdcap[rerun]' (rerun-sdk)") from None
    from uplink.backend.rerun_log import log_session

    out = Path(args.output) if args.output else Path(args.session) / "session.rrd"
    if not args.spawn and out.suffix != ".rrd":
        raise CliError(f"-o {out}: expected a .rrd file name")
    try:
        n = log_session(args.session, None if args.spawn else out)
    except (ValueError, SourceError) as e:
        raise CliError(str(e)) from None
    print(f"{'spawned the viewer' if args.spawn else out}: {n} frames logged", file=sys.stderr)
    return 0
