"""`crowdcap config check FILE` / `crowdcap config show [--config FILE]`."""

from __future__ import annotations

import argparse
import json

from device import config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check or show the config", description=__doc__)
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = csub.add_parser("check", help="validate a config file; errors name the key")
    check.add_argument("file")
    check.set_defaults(func=run_check)
    show = csub.add_parser("show", help="print the effective config as JSON (secrets masked)")
    show.add_argument("--config", dest="file", default=None, help="config TOML (default: built-in defaults)")
    show.set_defaults(func=run_show)


def run_check(args: argparse.Namespace) -> int:
    config.load(args.file)
    print(f"{args.file}: ok")
    return 0


def run_show(args: argparse.Namespace) -> int:
    print(json.dumps(config.show(config.load(args.file)), indent=2))
    return 0
