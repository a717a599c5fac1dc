"""`crowdcap bench NAME [ARGS...]`: run a benchmark from `bench/` and print its JSON (= `python -m bench`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (pipeline, redact, depth, uplink); JSON out",
                       description=__doc__)
    p.add_argument("name", nargs="?", help="benchmark name; omit to list them")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark (see NAME --help)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.__main__ import main

    return main(([args.name] if args.name else []) + list(args.args))
