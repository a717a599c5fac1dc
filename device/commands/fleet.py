"""`crowdcap fleet keygen|sign|push`: the fleet's signing key, signed updates, rollouts over the broker.

    crowdcap fleet keygen --out fleet.key [--force]
    crowdcap fleet sign --key fleet.key --device ID policy NEW.toml [-o cmd.json]
    crowdcap fleet sign --key fleet.key --device ID model CARD.toml MODEL.onnx
    crowdcap fleet sign --key fleet.key --device ID command stop [--args '{"key": ..., "value": ...}']
    crowdcap fleet push --broker URL --key fleet.key --devices ID... | --all
                        --policy NEW.toml | --model CARD MODEL | --command CMD [--args JSON]
                        [--canary N%] [--timeout S] [--json]

Backend tools (uplink/backend/fleet.py, fleet_push.py). The private key is never printed or logged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from device.cli import CliError


def _canary(v: str) -> float:
    try:
        pct = float(v.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage like 25%, got {v!r}") from None
    if not 0 <= pct <= 100:
        raise argparse.ArgumentTypeError(f"expected 0-100%, got {v!r}")
    return pct


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="fleet signing key, signed policy/model/command updates, rollouts",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fsub = p.add_subparsers(dest="fleet_command", metavar="ACTION")
    k = fsub.add_parser("keygen", help="a new Ed25519 key pair (private key file 0600; prints the public key)")
    k.add_argument("--out", required=True, help="private key file to create (public key: OUT.pub)")
    k.add_argument("--force", action="store_true", help="replace an existing key file")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=run_keygen)

    s = fsub.add_parser("sign", help="sign one update for one device (prints the message for .../cmd)")
    s.add_argument("--key", required=True, help="private key file (from fleet keygen)")
    s.add_argument("--device", required=True, help="device id the command is for")
    s.add_argument("--ttl", type=float, default=300.0, help="seconds the command stays valid (default 300)")
    s.add_argument("-o", "--output", default=None, help="write here instead of stdout")
    what = s.add_subparsers(dest="what", metavar="WHAT", required=True)
    wp = what.add_parser("policy", help="a policy update")
    wp.add_argument("file")
    wm = what.add_parser("model", help="a model update (card + ONNX file)")
    wm.add_argument("card")
    wm.add_argument("model")
    wc = what.add_parser("command", help="start, stop, config set, reboot-service, ...")
    wc.add_argument("name")
    wc.add_argument("--args", default=None, help="JSON object of arguments")
    s.set_defaults(func=run_sign)

    u = fsub.add_parser("push", help="publish signed updates, collect results, halt on a failing canary")
    u.add_argument("--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    u.add_argument("--username", default="", help="MQTT username")
    u.add_argument("--key", required=True, help="private key file (from fleet keygen)")
    who = u.add_mutually_exclusive_group(required=True)
    who.add_argument("--devices", nargs="+", metavar="ID", help="device ids")
    who.add_argument("--all", action="store_true", help="every device whose retained status is online")
    upd = u.add_mutually_exclusive_group(required=True)
    upd.add_argument("--policy", metavar="FILE", help="a policy TOML")
    upd.add_argument("--model", nargs=2, metavar=("CARD", "MODEL"), help="a model card and its ONNX file")
    upd.add_argument("--command", dest="plain_command", metavar="CMD",
                     help="a plain command (start, stop, config set, ...)")
    u.add_argument("--args", default=None, help="JSON arguments of --command")
    u.add_argument("--canary", type=_canary, default=0.0, metavar="N%",
                   help="update this share of the devices first; halt if any of them fails (default: none)")
    u.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each wave's results")
    u.add_argument("--ttl", type=float, default=300.0, help="seconds each signed command stays valid")
    u.add_argument("--json", action="store_true")
    u.set_defaults(func=run_push)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _errors(fn):  # FleetError (bad key, bad update) is a user error: exit 2 with its message
    def wrapped(args: argparse.Namespace) -> int:
        from uplink.backend.fleet import FleetError

        try:
            return fn(args)
        except FleetError as e:
            raise CliError(str(e)) from None
    return wrapped


@_errors
def run_keygen(args: argparse.Namespace) -> int:
    from uplink.backend.fleet import keygen

    info = keygen(args.out, force=args.force)
    if args.json:
        print(json.dumps(info))
    else:
        print(f"private key: {info['private_key']} (mode 0600; keep it off the devices)\n"
              f"public key:  {info['public_key']}  (also in {info['public_key_file']})\n"
              f"on each device: crowdcap config set downlink.public_key {info['public_key']}")
    return 0


def _update(kind: str, *values: str | None) -> tuple[str, dict]:
    from uplink.backend import fleet

    if kind == "policy":
        return fleet.policy_command(str(values[0]))
    if kind == "model":
        return fleet.model_command(str(values[0]), str(values[1]))
    return fleet.plain_command(str(values[0]), values[1])


@_errors
def run_sign(args: argparse.Namespace) -> int:
    from uplink.backend import fleet

    key = fleet.load_key(args.key)
    values = {"policy": (getattr(args, "file", None),), "model": (getattr(args, "card", None), getattr(args, "model", None)),
              "command": (getattr(args, "name", None), getattr(args, "args", None))}[args.what]
    cmd, cmd_args = _update(args.what, *values)
    raw = fleet.sign(key, args.device, cmd, cmd_args, ttl_s=args.ttl)
    if args.output:
        Path(args.output).write_bytes(raw + b"\n")
        print(f"signed {cmd} for {args.device} (key {fleet.fingerprint(key)}) → {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(raw.decode() + "\n")
    return 0


@_errors
def run_push(args: argparse.Namespace) -> int:
    import os

    from capture.config import ConfigError
    from uplink.backend import fleet
    from uplink.backend.fleet_push import Push, table

    if args.timeout <= 0:
        raise CliError(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    if args.args and not args.plain_command:
        raise CliError("--args: only with --command")
    key = fleet.load_key(args.key)
    if args.policy:
        cmd, cmd_args = _update("policy", args.policy)
    elif args.model:
        cmd, cmd_args = _update("model", *args.model)
    else:
        cmd, cmd_args = _update("command", args.plain_command, args.args)
    try:
        push = Push(args.broker, key, cmd, cmd_args, ttl_s=args.ttl, timeout_s=args.timeout,
                    username=args.username, password=os.environ.get("CROWDCAP_MQTT_PASSWORD", ""))
    except ConfigError as e:
        raise CliError(f"--broker: {e}") from None
    try:
        push.connect()
    except ConnectionError as e:
        raise CliError(str(e)) from None
    try:
        devices = args.devices if args.devices else push.discover()
        if not devices:
            raise CliError("--all: no online device found on the broker (retained status topics)")
        doc = push.run(devices, args.canary)
    finally:
        push.close()
    print(json.dumps(doc, indent=1) if args.json else table(doc))
    return 0 if doc["ok"] else 1
