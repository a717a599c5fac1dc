"""`crowdcap status`: the running service's status (what the console's `status` shows).

Exit code 0 when the service answers, 3 when no service is running (said plainly, never a hang).
"""

from __future__ import annotations

import argparse

from device.commands.ctl import add_target_flags, execute


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="status of the running service", description=__doc__)
    add_target_flags(p)
    p.add_argument("--json", action="store_true", help="print the status as one JSON line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return execute(args, ["status"], args.json)
