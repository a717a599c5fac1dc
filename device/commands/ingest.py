"""`crowdcap ingest --broker URL --out DIR [--share-group NAME] [--idle-exit SECONDS]`: the reference backend."""

from __future__ import annotations

import argparse
import json
import signal

from device.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="receive device streams from a broker into TUM session folders",
                       description=__doc__)
    p.add_argument("--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    p.add_argument("--out", required=True, help="output folder: OUT/<device>/<session>/")
    p.add_argument("--share-group", default=None,
                   help="MQTT 5 shared subscription group: several workers (sharing OUT) split the load")
    p.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                   help="exit 0 after this long without a message (batch jobs, tests)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from capture.config import ConfigError
    from uplink.backend.ingest import Ingest

    if args.idle_exit is not None and args.idle_exit <= 0:
        raise CliError(f"--idle-exit: expected a positive number of seconds, got {args.idle_exit}")
    try:
        ing = Ingest(args.broker, args.out, share_group=args.share_group)
    except ConfigError as e:
        raise CliError(f"--broker: {e}") from None
    except ValueError as e:
        raise CliError(f"--share-group: {e}") from None
    signal.signal(signal.SIGTERM, lambda *_: ing.stop())
    try:
        stats = ing.run(idle_exit=args.idle_exit)
    except ConnectionError as e:
        raise CliError(str(e)) from None
    except KeyboardInterrupt:
        ing.stop()
        stats = ing.stats()
    print(json.dumps(stats))
    return 0
