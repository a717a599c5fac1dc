"""`crowdcap` command line: one small module per subcommand in `device/commands/`.

Each command module has `register(subparsers)` which adds its parser and sets `func=run`. Heavy
imports (open3d, onnxruntime) happen inside `run`, so `crowdcap --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from capture.configcore import ConfigError
from device.version import package_version

# Order is the order shown in --help.
COMMANDS = [
    "run", "demo", "record", "config", "redact", "models", "ingest", "console", "status", "ctl",
    "cloud", "mesh", "eval_odometry", "export", "view", "bench", "devices", "identity", "privacy",
    "tags", "fleet",
]


LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


class CliError(Exception):
    """A user-facing error: printed as 'crowdcap: error: ...', exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crowdcap",
        description="Wearable RGB-D capture with on-device privacy redaction, 3D and MQTT uplink.",
    )
    parser.add_argument("--version", action="version", version=f"crowdcap {package_version()}")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="log verbosity on stderr: debug, info, warning, error (any case; default: warning)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"device.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"device.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    _accept_global_flags_everywhere(sub)
    return parser


def _accept_global_flags_everywhere(sub: argparse._SubParsersAction) -> None:
    """`crowdcap run ... --debug` is what people type: every subcommand (and sub-subcommand) takes
    --debug and --log-level too. SUPPRESS keeps a value given before the command when not repeated."""
    for p in dict.fromkeys(sub.choices.values()):
        p.add_argument("--log-level", default=argparse.SUPPRESS, type=str.upper, choices=LOG_LEVELS,
                       help=argparse.SUPPRESS)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_global_flags_everywhere(action)


def _configure_logging(level: str) -> None:
    """stderr shows `level`; the root logger still passes INFO on, so the running service's log ring
    (`log tail` on the console) has the INFO lines too."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "crowdcap_stderr", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler.crowdcap_stderr = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    handler.setLevel(level)
    root.setLevel(min(logging.INFO, logging.getLevelName(level)))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CliError, ConfigError) as e:  # bad input: a message, not a traceback
        print(f"crowdcap: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        if _is_input_error(e):  # a file the user gave is not what it should be: the message names it
            print(f"crowdcap: error: {e}", file=sys.stderr)
            return 2
        if args.debug:  # a plain ValueError from deep inside is a bug, not the user's input
            raise
        print(f"crowdcap: error: internal error: {type(e).__name__}: {e} (run with --debug for details)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `crowdcap status | head`: the reader left; nothing to report
        _silence_stdout()
        return 0
    except OSError as e:
        if args.debug:
            raise
        if e.filename is None:
            print(f"crowdcap: error: {type(e).__name__}: {e} (run with --debug for details)", file=sys.stderr)
            return 1
        # a path the user gave (or a default one) is missing, not a folder, read-only, ...: name it
        print(f"crowdcap: error: {e.filename}: {(e.strerror or str(e)).lower()} "
              "(check the path and its permissions)", file=sys.stderr)
        return 2
    except Exception as e:  # never a bare traceback for a user; --debug shows it
        if args.debug:
            raise
        print(f"crowdcap: error: {type(e).__name__}: {e} (run with --debug for details)", file=sys.stderr)
        return 1


def _is_input_error(e: ValueError) -> bool:
    """Errors our readers raise about the user's input (each names the file, field or line)."""
    from capture.configcore import InputError

    return isinstance(e, InputError)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail on the closed pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # `python -m device.cli`: run the imported module so its CliError is the one raised
    from device.cli import main as _main

    sys.exit(_main())
