"""`crowdcap run`: the device service. Flags override the config file, so a field test needs no file."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from device import config as config_mod

log = logging.getLogger("crowdcap.run")


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by run, demo and record: each overrides one config key."""
    p.add_argument("--config", default=None, help="config TOML (default: built-in defaults)")
    p.add_argument("--source", default=None, help="synthetic | replay:DIR | a camera (overrides capture.source)")
    p.add_argument("--pace", choices=["realtime", "fast"], default=None,
                   help="replay/synthetic pacing (default realtime)")
    p.add_argument("--fps", type=float, default=None, help="capture fps (overrides capture.fps)")
    p.add_argument("--device-id", default=None, help="device id (overrides device.id)")
    p.add_argument("--state-dir", default=None, help="state folder (overrides device.state_dir)")
    p.add_argument("--policy", default=None, help="wearer privacy policy TOML (overrides redact.policy)")
    p.add_argument("--no-redact", action="store_true",
                   help="do not redact (only for trusted, already-redacted replays; frames are marked)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the capture service", description=__doc__)
    add_common_flags(p)
    p.add_argument("--broker", default=None, help="mqtt://HOST:PORT or mqtts://HOST:PORT (overrides uplink.broker)")
    p.add_argument("--spool", default=None, help="spool folder (overrides uplink.spool_dir)")
    p.add_argument("--max-frames", type=int, default=None,
                   help="capture N frames, then exit 0 once the ingest has confirmed every accepted frame (3 if not within --drain-timeout)")
    p.add_argument("--drain-timeout", type=float, default=None,
                   help="seconds to wait for delivery before exiting non-zero (overrides pipeline.drain_timeout)")
    p.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)  # touched once running (tests)
    p.set_defaults(func=run)


def load_config(args: argparse.Namespace) -> config_mod.Config:
    cfg = config_mod.load(args.config)
    overrides = {
        "capture.source": args.source, "capture.pace": args.pace, "capture.fps": args.fps,
        "device.id": args.device_id, "device.state_dir": args.state_dir, "redact.policy": args.policy,
        "uplink.broker": getattr(args, "broker", None), "uplink.spool_dir": getattr(args, "spool", None),
        "pipeline.drain_timeout": getattr(args, "drain_timeout", None),
    }
    if args.no_redact:
        overrides["redact.enabled"] = False
    return config_mod.override(cfg, **overrides)


def run(args: argparse.Namespace) -> int:
    if args.max_frames is not None and args.max_frames < 1:
        raise config_mod.ConfigError("--max-frames: expected a positive integer")
    cfg = load_config(args)
    # one service per state folder and spool: a second one would share the session counter, the
    # control socket and the spool's segment files (duplicates, or records lost)
    locks: list[int] = []
    try:
        locks.append(hold_lock(Path(cfg.device.state_dir), "crowdcap.lock", "--state-dir / device.state_dir"))
        locks.append(hold_lock(Path(cfg.uplink.spool_dir), ".crowdcap-run.lock", "--spool / uplink.spool_dir"))
        return _serve(args, cfg)
    finally:  # also when the service could not be built (bad source, model, ...)
        for fd in locks:
            os.close(fd)


def _serve(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    from device.memory import limit_malloc_arenas
    from device.operations import Operations
    from device.runtime import Service

    limit_malloc_arenas()  # before any stage thread allocates (device/memory.py)
    service = Service(cfg, Path(args.config) if args.config else None, max_frames=args.max_frames)
    service.install_signal_handlers()
    ops = None
    try:
        service.start(wait_for_source=True)
        # console, control socket, health telemetry, sd_notify watchdog, signed downlink
        ops = Operations.start(service)
        if args.ready_file:
            Path(args.ready_file).touch()
        service.wait()
        if not service.stop(timeout=2.0):
            log.warning("pipeline did not finish within 2 s")
        if args.max_frames is not None and not service.stop_requested and not cfg.uplink.broker:
            print("crowdcap: no broker configured: accepted frames stay in the spool "
                  f"({cfg.uplink.spool_dir}) until one is", file=sys.stderr)
        elif args.max_frames is not None and not service.stop_requested:
            t0 = time.monotonic()
            if not service.drain(cfg.pipeline.drain_timeout):
                why = getattr(service.stages.get("uplink"), "undelivered", lambda: "")()
                confirmed = "ingest-confirmed" if cfg.uplink.delivery == "ingest" else "delivered to the broker"
                print(f"crowdcap: error: not everything was {confirmed} within {cfg.pipeline.drain_timeout:.0f} s"
                      f"{': ' + why if why else ''} (it stays in the spool and is sent next time)", file=sys.stderr)
                return 3
            log.info("delivered in %.1f s", time.monotonic() - t0)
    finally:
        if ops is not None:
            ops.close()
        service.close()
    # console `restart` / downlink `reboot-service`: a distinct exit code so systemd restarts the unit
    if service.restart_requested:
        return EXIT_RESTART
    return _honest_exit(service, cfg)


def _honest_exit(service: object, cfg: config_mod.Config) -> int:
    """Non-zero, with the reason, when no frame was read or redaction withheld every one (device/exits.py)."""
    from device.exits import verdict

    pipeline = getattr(service, "pipeline", None)
    if pipeline is None:
        return 0
    stage = getattr(service, "stages", {}).get("redact")
    status = stage.status() if cfg.redact.enabled and hasattr(stage, "status") else None
    code, why = verdict(pipeline.snapshot(), status, cfg.capture.source)
    if code:
        print(f"crowdcap: error: {why}", file=sys.stderr)
    return code


EXIT_RESTART = 75


def hold_lock(folder: Path, name: str, flag: str) -> int:
    """An exclusive flock on `folder/name` (created), held until the fd is closed or the process
    ends (also when it is killed); a CliError naming the folder and the holder's pid if taken."""
    import fcntl

    from device.cli import CliError

    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise CliError(f"{folder}: another crowdcap run (pid {holder}) is using this folder; stop it first "
                       f"(systemctl stop crowdcap) or give this one its own folder ({flag})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
