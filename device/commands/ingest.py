"""`crowdcap ingest --config FILE | --broker URL --out DIR [--share-group NAME] [--idle-exit SECONDS]`:
the reference backend. `--config` reads an `[ingest]` TOML section (uplink/backend/config.py: brokers,
credentials, TLS / mutual TLS, share group, device registry, bounds, metrics port); flags override it."""

from __future__ import annotations

import argparse
import json
import signal

from device.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="receive device streams from a broker into TUM session folders",
                       description=__doc__)
    p.add_argument("--config", default=None, help="TOML file with an [ingest] section")
    p.add_argument("--broker", action="append", default=None,
                   help="mqtt://HOST[:PORT], mqtts://HOST[:PORT] or nats://HOST:PORT (repeat for the nodes of a cluster)")
    p.add_argument("--out", default=None, help="output folder: OUT/<device>/<session>/")
    p.add_argument("--mcap", action="store_true", default=None,
                   help="also write an MCAP per session as frames arrive (ingest.mcap)")
    p.add_argument("--share-group", default=None,
                   help="MQTT 5 shared subscription group: several workers (sharing OUT) split the load")
    p.add_argument("--registry", default=None, help="device registry TOML: only registered, signed devices are stored")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics and /healthz port (0 = off)")
    p.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                   help="exit 0 after this long without a message (batch jobs, tests)")
    p.set_defaults(func=run)


def load_config(args: argparse.Namespace):  # noqa: ANN201
    """The [ingest] section of --config (validated, errors naming the key) with the flags applied."""
    from capture.config import ConfigError
    from device import settings
    from uplink.backend.config import IngestConfig

    table: dict = {}
    if args.config:
        try:
            data = settings.load_toml(args.config)
        except ConfigError as e:
            raise CliError(str(e)) from None
        unknown = sorted(set(data) - {"ingest"})
        if unknown:
            raise CliError(f"{args.config}: {unknown[0]}: unknown section (expected [ingest])")
        table = dict(data.get("ingest", {})) if isinstance(data.get("ingest", {}), dict) else data["ingest"]
    elif not args.broker or not args.out:
        raise CliError("ingest: give --config FILE, or --broker URL and --out DIR")
    overrides = {"brokers": args.broker, "out": args.out, "share_group": args.share_group, "mcap": args.mcap,
                 "registry": args.registry, "metrics_port": args.metrics_port}
    if isinstance(table, dict):
        table.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return settings.build(IngestConfig, table, "ingest")
    except ConfigError as e:
        where = f"{args.config}: " if args.config else ""
        msg = str(e)
        for flag, key in (("--broker", "ingest.brokers"), ("--share-group", "ingest.share_group"),
                          ("--registry", "ingest.registry"), ("--out", "ingest.out")):
            if not args.config and msg.startswith(key):
                msg = f"{flag}: {msg}"
        raise CliError(f"{where}{msg}") from None


def run(args: argparse.Namespace) -> int:
    from capture.config import ConfigError
    from uplink.backend.ingest import Ingest

    if args.idle_exit is not None and args.idle_exit <= 0:
        raise CliError(f"--idle-exit: expected a positive number of seconds, got {args.idle_exit}")
    cfg = load_config(args)
    try:
        ing = Ingest.from_config(cfg)
    except ConfigError as e:
        raise CliError(f"ingest.registry: {e}" if cfg.registry else str(e)) from None
    server = None
    if cfg.metrics_port:
        from uplink.backend.metrics import serve_metrics

        try:
            server = serve_metrics(ing, cfg.metrics_host, cfg.metrics_port)
        except OSError as e:
            raise CliError(f"ingest.metrics_port: cannot listen on {cfg.metrics_host}:{cfg.metrics_port}: {e}") from None
    signal.signal(signal.SIGTERM, lambda *_: ing.stop())
    try:
        stats = ing.run(idle_exit=args.idle_exit)
    except ConnectionError as e:
        raise CliError(str(e)) from None
    except KeyboardInterrupt:
        ing.stop()
        stats = ing.stats()
    finally:
        if server is not None:
            server.shutdown()
    print(json.dumps(stats))
    return 0
