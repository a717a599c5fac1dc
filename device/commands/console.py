"""`crowdcap console --port PORT`: the operator shell on a serial port, against the running service.

`crowdcap console hash-pin` prints the scrypt hash of a PIN for `console.pin_hash`.
The service itself hosts the console when `console.port` is set; this command is for a port the
service does not own (a USB gadget serial, a second UART) or for a service that is not running yet:
then `status` says so and nothing hangs.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from device.commands.ctl import add_target_flags, resolve_socket


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("console", help="operator shell on a serial port (or hash a PIN)", description=__doc__)
    p.add_argument("--port", default=None,
                   help="serial port or pyserial URL (/dev/ttyS0, /dev/ttyGS0, loop://); default console.port")
    p.add_argument("--baudrate", type=int, default=None, help="serial speed (default console.baudrate, 115200)")
    add_target_flags(p)
    p.set_defaults(func=run)
    csub = p.add_subparsers(dest="console_command", metavar="ACTION")
    h = csub.add_parser("hash-pin", help="print the scrypt hash of a PIN for console.pin_hash")
    h.add_argument("--pin-stdin", action="store_true", help="read the PIN from stdin instead of prompting")
    h.set_defaults(func=run_hash_pin)


def run(args: argparse.Namespace) -> int:
    from serial import SerialException

    from device.cli import CliError
    from device.config import load
    from device.console.serial_port import SerialConsole, open_port
    from device.control_socket import SocketBackend

    path = resolve_socket(args)  # also picks the default config file when --config is not given
    cfg = load(args.config) if args.config else None
    port = args.port or (cfg.console.port if cfg else "")
    if not port:
        raise CliError("--port: no serial port given (and console.port is empty)")
    baud = args.baudrate or (cfg.console.baudrate if cfg else 115200)
    if baud <= 0:
        raise CliError(f"--baudrate: expected a positive number, got {baud}")
    try:  # a wrong or busy port is the operator's typo: say so now rather than retry forever
        open_port(port, baud).close()
    except (SerialException, OSError, ValueError) as e:
        raise CliError(f"--port: {e}; check the path (`crowdcap devices` lists serial ports) and that nothing "
                       "else has it open (the service itself does when console.port is set)") from None
    console = SerialConsole(port, lambda: SocketBackend(path), baudrate=baud)
    print(f"crowdcap console on {port} at {baud} 8N1 (service socket {path}); Ctrl-C stops", file=sys.stderr)
    console.serve_forever()
    return 0


def run_hash_pin(args: argparse.Namespace) -> int:
    from device.cli import CliError
    from device.console.auth import hash_pin

    if args.pin_stdin or not os.isatty(0):
        pin = sys.stdin.readline().rstrip("\r\n")
    else:
        pin = getpass.getpass("PIN: ")
        if getpass.getpass("again: ") != pin:
            raise CliError("the two PINs differ")
    if len(pin) < 4 or len(pin) > 128:
        raise CliError("PIN: expected 4-128 characters")
    print(hash_pin(pin))
    return 0
