"""`crowdcap ctl COMMAND...`: run one console command against the running service (local socket).

    crowdcap ctl config set capture.fps 15
    crowdcap ctl spool stats --json

Exit code 0 if the command succeeded, 1 if it failed, 3 if no service is running.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

DEFAULT_CONFIG = "/etc/crowdcap/crowdcap.toml"


def add_target_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help=f"config TOML of the service (default $CROWDCAP_CONFIG or {DEFAULT_CONFIG} if present)")
    p.add_argument("--socket", default=None, help="control socket path (default <device.state_dir>/control.sock)")


def resolve_socket(args: argparse.Namespace) -> Path:
    from device.config import load
    from device.control_socket import socket_path

    if args.socket:
        return Path(args.socket)
    if not args.config:
        env = os.environ.get("CROWDCAP_CONFIG")
        args.config = env or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None)
    return socket_path(load(args.config))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ctl", help="run a console command against the running service", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_flags(p)
    p.add_argument("--json", action="store_true", help="print the reply as one JSON line")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND", help="the command and its arguments")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from device.cli import CliError

    argv = [a for a in args.argv if a != "--json"]
    as_json = args.json or len(argv) != len(args.argv)
    if not argv:
        raise CliError("COMMAND: expected a command (try: crowdcap ctl help)")
    return execute(args, argv, as_json)


def execute(args: argparse.Namespace, argv: list[str], as_json: bool) -> int:
    from device.control_socket import ControlClient, ServiceNotRunning, offline_reply

    client = ControlClient(resolve_socket(args))
    try:
        reply = client.execute(argv)
        running = True
    except ServiceNotRunning as e:
        reply = offline_reply(argv, str(e))
        running = False
    finally:
        client.close()
    if as_json:
        print(json.dumps(reply.to_dict(), separators=(",", ":"), default=str))
    elif reply.text:
        print(reply.text)
    if not running and argv[0] not in ("help", "version"):
        return 3
    return 0 if reply.ok else 1
