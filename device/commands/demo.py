"""`crowdcap demo --seconds N --out DIR`: the whole path on embedded defaults, no camera or broker needed.

synthetic RGB-D with real faces → redaction → odometry, keyframes, clouds → spool → MQTT through an
embedded broker → in-process ingest → a session folder with report.html, and a fused mesh at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

from device.commands.run import add_common_flags, load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole path on embedded defaults and write a report",
                       description=__doc__)
    add_common_flags(p)
    p.add_argument("--seconds", type=float, default=20.0, help="capture time (default 20)")
    p.add_argument("--out", default="demo-out", help="output folder (default ./demo-out)")
    p.add_argument("--no-mesh", action="store_true", help="skip the fused mesh at the end")
    p.add_argument("--prerender", type=int, default=30, metavar="N",
                   help="synthetic: render N frames before the clock starts and play them forth and back, as a "
                        "camera would deliver them at no CPU cost (default 30, ~46 MB; 0 = render live, which costs "
                        "~11 ms of the device's CPU per frame)")
    p.set_defaults(func=run, broker=None, spool=None, drain_timeout=None)


def _progress(progress: Any, service: Any, t_end: float, seconds: float) -> None:
    s = service.status()
    up = s["details"].get("uplink", {})
    left = max(0.0, t_end - time.monotonic())
    progress.update(seconds - left, captured=s["frames_captured"],
                    redacted=s["stages"].get("redact", {}).get("frames_out", 0),
                    withheld=sum(s["stages"].get("redact", {}).get("withheld", {}).values()),
                    dropped=s["frames_dropped"], spooled=s["stages"].get("uplink", {}).get("frames_out", 0),
                    sent=up.get("sent", 0), fps=s["stages"]["capture"]["fps"])


def run(args: argparse.Namespace) -> int:
    from device.cli import CliError
    from device.memory import limit_malloc_arenas
    from device.runtime import Service
    from uplink.backend.ingest import Ingest
    from uplink.embedded import start_broker

    if args.seconds <= 0:
        raise CliError("--seconds: expected a positive number")
    limit_malloc_arenas()  # before any stage thread allocates (device/memory.py)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    private_walk = args.source is None  # the default walk includes the wearer's own private things
    if args.source is None:
        args.source = "synthetic:private"
    if args.state_dir is None:
        args.state_dir = str(out / "state")
    args.spool = str(out / "spool")
    print(f"crowdcap demo: {args.seconds:.0f} s of {args.source} → redact → 3D → MQTT → ingest into {out}/",
          file=sys.stderr)
    broker_url, stop_broker = start_broker()
    args.broker = broker_url
    cfg = load_config(args)
    if args.prerender < 0:
        raise CliError("--prerender: expected 0 or a positive number of frames")
    if cfg.capture.source.partition(":")[0] == "synthetic" and args.prerender and not cfg.capture.prerender:
        from device import config as config_mod

        cfg = config_mod.override(cfg, **{"capture.prerender": args.prerender})
    walk: dict[str, Any] = {}
    if private_walk and cfg.privacy.enabled and cfg.redact.enabled:
        from device import config as config_mod
        from device.demo_privacy import OBJECT_SEARCH, prepare

        walk = prepare(out, Path(cfg.device.state_dir), cfg.capture.width, cfg.capture.height, cfg.capture.seed)
        cfg = config_mod.override(cfg, **{"privacy.wifi_file": str(walk["wifi_file"]), **OBJECT_SEARCH})
    sessions = out / "sessions"
    ingest = Ingest(broker_url, sessions)
    ingest_thread = threading.Thread(target=ingest.run, name="ingest", daemon=True)
    ingest_thread.start()
    deadline = time.monotonic() + 15.0  # the ingest must be subscribed before the first frame is published
    while not ingest.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    if not ingest.connected:
        raise CliError(f"the embedded ingest could not subscribe at {broker_url}")
    fps = cfg.capture.fps
    service = Service(cfg, max_frames=int(args.seconds * fps) + 1)
    service.install_signal_handlers()
    from device.progress import Progress

    t0 = time.monotonic()
    progress = Progress("demo", args.seconds)
    try:
        service.start()
        t_end = t0 + args.seconds

        def tick(s: Any) -> None:
            _progress(progress, s, t_end, args.seconds)
            if walk:
                from device.demo_privacy import walk as walk_on

                walk_on(walk["wifi_file"], time.monotonic() - t0, args.seconds)

        service.wait(until=t_end + 5.0, tick=tick)
        service.stop(timeout=5.0)
        progress.close(min(args.seconds, time.monotonic() - t0))
        print("delivering the rest of the spool…", file=sys.stderr)
        delivered = service.drain(cfg.pipeline.drain_timeout)
        status = service.status()
    finally:
        progress.close()
        service.close()
    wall = time.monotonic() - t0
    spooled = status["stages"].get("uplink", {}).get("frames_out", 0)
    deadline = time.monotonic() + 15.0  # the broker has acked everything; let the ingest finish writing
    while ingest.stats().get("frame", 0) < spooled and time.monotonic() < deadline:
        time.sleep(0.1)
    ingest.stop()
    ingest_thread.join(10)
    stop_broker()
    rss_run_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # peak so far: the run
    session_dir = sessions / service.device_id / service.session_id
    mesh_path = None
    if not args.no_mesh and cfg.depth.enabled and session_dir.is_dir():
        from device.cli import main as cli_main

        print("fusing keyframes into a mesh…", file=sys.stderr)
        if cli_main(["mesh", str(session_dir), "-o", str(out / "mesh.glb")]) == 0:
            mesh_path = out / "mesh.glb"
    summary = _summary(status, ingest.stats(), wall, delivered, session_dir, mesh_path)
    summary["peak_rss_mb_run"] = rss_run_mb
    summary["peak_rss_mb_with_mesh"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    _print_summary(summary)
    return 0 if delivered else 3


def _summary(status: dict[str, Any], ingest: dict[str, Any], wall: float, delivered: bool,
             session_dir: Path, mesh: Path | None) -> dict[str, Any]:
    stages = status["stages"]
    redact = status["details"].get("redact", {})
    return {
        "device_id": status["device_id"],
        "session_id": status["session_id"],
        "seconds": round(wall, 1),
        "frames_captured": status["frames_captured"],
        "frames_dropped_before_redaction": status["frames_dropped"],
        "cpu_seconds": round(time.process_time(), 1),
        "frames_redacted": stages.get("redact", {}).get("frames_out", 0),
        "frames_withheld": sum(stages.get("redact", {}).get("withheld", {}).values()),
        "withheld_by_reason": stages.get("redact", {}).get("withheld", {}),
        "faces_redacted": (redact["regions_by_class"].get("face", 0) if "regions_by_class" in redact
                           else redact.get("regions_total", redact.get("regions"))),
        "redactions_by_class": redact.get("regions_by_class", {}),
        "wearer_private": {"matches_by_name_hash": (redact.get("private") or {}).get("matches", {}),
                           "withheld": (redact.get("private") or {}).get("withheld", {}),
                           "zones": status.get("zones")},
        "keyframes": status["details"].get("depth", {}).get("keyframes"),
        "frames_spooled": stages.get("uplink", {}).get("frames_out", 0),
        "frames_ingested": ingest.get("frame", 0),
        "duplicates_at_ingest": ingest.get("duplicate", 0),
        "all_delivered": delivered,
        "fps": round(stages.get("uplink", {}).get("frames_out", 0) / wall, 2) if wall else 0.0,
        "latency_ms_p50": status["latency_ms_p50"],
        "latency_ms_p99": status["latency_ms_p99"],
        "stage_latency_ms": {k: [v["latency_ms_p50"], v["latency_ms_p99"]] for k, v in stages.items()},
        "session_dir": str(session_dir),
        "report": str(session_dir / "report.html"),
        "mesh": str(mesh) if mesh else None,
    }


def _print_summary(s: dict[str, Any]) -> None:
    from device.progress import words

    rows = [
        ("session", f"{s['device_id']}/{s['session_id']}"),
        ("frames captured", s["frames_captured"]),
        ("dropped before redaction", s["frames_dropped_before_redaction"]),
        ("peak RSS", f"{s['peak_rss_mb_run']} MB during the run (device + embedded broker + ingest in one "
                     f"process), {s['peak_rss_mb_with_mesh']} MB with the mesh"),
        ("redacted / withheld", f"{s['frames_redacted']} / {s['frames_withheld']}"
                                + (f" ({words(s['withheld_by_reason'])})" if s["withheld_by_reason"] else "")),
        ("faces redacted", words(s["faces_redacted"])),
        ("redactions per class", ", ".join(f"{k} {v}" for k, v in sorted(s["redactions_by_class"].items())) or "none"),
        ("wearer's private things", f"regions by name hash {s['wearer_private']['matches_by_name_hash']}, "
                                    f"zone gaps {(s['wearer_private']['zones'] or {}).get('gaps', 0)}"),
        ("keyframes", words(s["keyframes"])),
        ("spooled / ingested", f"{s['frames_spooled']} / {s['frames_ingested']} "
                               f"({s['duplicates_at_ingest']} duplicates dropped by the ingest)"),
        ("throughput", f"{s['fps']} frames/s over {s['seconds']} s"),
        ("latency capture→spool", f"p50 {s['latency_ms_p50']:.1f} ms, p99 {s['latency_ms_p99']:.1f} ms"),
        ("per stage p50/p99 ms", ", ".join(f"{k} {a:.1f}/{b:.1f}" for k, (a, b) in s["stage_latency_ms"].items())),
        ("all delivered", words(s["all_delivered"])),
        ("session folder", s["session_dir"]),
        ("report", s["report"]),
        ("mesh", s["mesh"] or "not made (--no-mesh, depth off, or nothing fused)"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n── crowdcap demo summary " + "─" * 40)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
