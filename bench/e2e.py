"""`python -m bench e2e`: the whole device path at the camera's rate, against the brief's end-to-end target.

640×480 RGB-D at --fps (paced like a camera) → redaction → odometry/keyframes/clouds → encode + spool →
MQTT QoS 1 → a local mosquitto → `crowdcap ingest` in a separate process (as the backend would be).

Sections, each in its own process (clean RSS and CPU), side by side in one run: every --sources ×
every --paths. Sources: `synthetic` (the renderer, pre-rendered with --prerender), `demo` (`crowdcap
demo`'s walk: the wearer's private objects, places and zones registered, SIFT search on device/demo_privacy.py's schedule) and `replay`
(`crowdcap run`'s path: a TUM-layout folder read from disk, looped, paced in real time — by default
one written from the synthetic source, NOT real sensor data; give a real sequence with --replay-dir).
Face paths: `old_centerface` (the face path before issue 13), `new_default` (with the face bracket:
full detection on every `redact.face_every`-th frame, the frames between wait for it — their latency
includes that wait) and `new_every_frame` (the same, face_every = 1).

Reports frames captured / dropped before redaction / withheld / ingested, latency capture → written by
the ingest (p50/p99), CPU-ms per captured frame of the whole device process, per thread and per step
inside the stages (bench/_stage_cpu.py), the ingest's and the broker's CPU and RSS, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._e2e_extras import (  # issue 13: ingest and mesh apart, the source's cached frames beside the peak
    ingest_cpu_split,
    mesh_step,
    own_peak_rss_mb,
    source_cache_mb,
    warm_model_cache,
)

_INGEST = """
import json, sys, threading, time
import os
from uplink.backend.ingest import Ingest
if os.environ.get("CROWDCAP_BENCH_INGEST_PROFILE"):  # PREFIX: a cProfile dump per ingest worker thread
    import cProfile
    _work = Ingest._work
    def _profiled(self):
        prof = cProfile.Profile()
        prof.enable()
        try:
            _work(self)
        finally:
            prof.disable()
            prof.dump_stats(f"{os.environ['CROWDCAP_BENCH_INGEST_PROFILE']}.{threading.get_native_id()}")
    Ingest._work = _profiled
ing = Ingest(sys.argv[1], sys.argv[2])
ing.sink.depth_png = os.environ.get("CROWDCAP_BENCH_INGEST_DEPTH_PNG", "fast")  # opencv: the pre-issue-13 writer
_finalize_all, _fin_cpu = ing.sink.finalize_all, [0.0]
def _timed_finalize(*a, **kw):  # report.html + text files: per session, not per frame (reported apart)
    t0 = time.thread_time()
    try:
        return _finalize_all(*a, **kw)
    finally:
        _fin_cpu[0] += time.thread_time() - t0
ing.sink.finalize_all = _timed_finalize
t = threading.Thread(target=ing.run, kwargs={"idle_exit": float(sys.argv[3])}, daemon=True)
t.start()
deadline = time.monotonic() + 30
while not ing.connected and time.monotonic() < deadline:
    time.sleep(0.02)
import resource
def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime
cpu0 = cpu()  # after imports and subscribing: only the work on frames counts
print("ready" if ing.connected else "not-connected", flush=True)
t.join()
def vmhwm_mb():  # this process's own peak: ru_maxrss would carry the bench's RSS over fork + exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(ing.stats() | {"_cpu_s": cpu() - cpu0, "_startup_cpu_s": cpu0, "_finalize_cpu_s": _fin_cpu[0],
                                "_peak_rss_mb": vmhwm_mb()}), flush=True)
"""


PATHS: dict[str, list[str]] = {
    # the face path before issue 13: CenterFace downscaled every frame, tiles, re-checks
    "old_centerface": ["redact.models=[\"" + str(Path(__file__).resolve().parents[1] / "redact" / "models"
                                                  / "centerface.toml") + "\"]",
                       "redact.detect_width=384", "redact.detect_height=288", "redact.face_every=1"],
    "new_default": [],
    # the new face path without the bracket: full detection on every frame (redact.face_every = 1)
    "new_every_frame": ["redact.face_every=1"],
    "new_every3": ["redact.face_every=3"],
    # stands in for the faster face path (issue 13, branch `faces`) until it lands: does the rest keep up?
    "fast_face_standin": ["redact.detect_width=320", "redact.detect_height=256", "redact.verify_model_every=0",
                          "redact.tiles_per_frame=0"],
}


class ThreadCpu:
    """Samples each thread's CPU time (from /proc) while the run goes: CPU per pipeline stage."""

    def __init__(self, period: float = 0.25) -> None:
        self.period = period
        self.seen: dict[str, float] = {}
        self.base: dict[str, float] = {}  # CPU a thread had already used when sampling began
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-cpu-sampler", daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")
        self._started = False

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def sample(self) -> None:
        for t in threading.enumerate():
            try:
                fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            cpu = (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime
            key = f"{t.name}:{t.native_id}"
            self.base.setdefault(key, 0.0 if self._started else cpu)
            self.seen[key] = max(self.seen.get(key, 0.0), cpu)

    def __enter__(self) -> ThreadCpu:
        self._started = False
        self.sample()  # threads alive now (main: imports, model loading): count only what follows
        self._started = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def by_name(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, cpu in self.seen.items():
            name = key.rsplit(":", 1)[0]
            out[name] = out.get(name, 0.0) + cpu - self.base.get(key, 0.0)
        return out


SOURCES = ("synthetic", "demo", "replay")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench e2e", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", default="old_centerface,new_default",
                    help=f"face paths, comma-separated, of {', '.join(PATHS)} (default: old_centerface,new_default)")
    ap.add_argument("--sources", default=",".join(SOURCES),
                    help=f"sources, comma-separated (default: {','.join(SOURCES)})")
    ap.add_argument("--seconds", type=float, default=20.0, help="capture time per section (default 20)")
    ap.add_argument("--fps", type=float, default=30.0, help="camera rate (default 30)")
    ap.add_argument("--prerender", type=int, default=0, metavar="N",
                    help="synthetic: render N frames before the run and loop them forth and back (a camera "
                         "costs no CPU to render; this takes the renderer's ~11 ms/frame out of the budget)")
    ap.add_argument("--replay-dir", default=None, metavar="DIR",
                    help="replay: a TUM-layout folder (real sensor data, e.g. TUM fr1/xyz); default: one "
                         "written from the synthetic source (not sensor data)")
    ap.add_argument("--replay-frames", type=int, default=30, metavar="N",
                    help="replay: frames rendered into the written folder, played forth and back (default 30: ~45 MB decoded, within capture.replay_cache_mb)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every section, e.g. redact.threads=1 (repeatable)")
    ap.add_argument("--cold-models", action="store_true",
                    help="prepare the models inside each section, as a device's very first start does (default: "
                         "from a warm cache, as every later start: device.state_dir/model-cache)")
    ap.add_argument("--no-mesh", action="store_true", help="skip the mesh fusion step after each section (its RSS "
                    "and CPU are reported apart from the device's and the ingest's)")
    ap.add_argument("--path", choices=list(PATHS), help=argparse.SUPPRESS)  # one section (child process)
    ap.add_argument("--source", choices=SOURCES, default="synthetic", help=argparse.SUPPRESS)
    return ap


SUMMARY_KEYS = ("dropped_before_redaction", "dropped_pct", "withheld", "output_fps", "latency_capture_to_spool_ms",
                "face_bracket",
                "latency_capture_to_ingest_ms",
                "device_cpu_ms_per_frame", "redact_cpu_ms_per_frame_through_redaction", "cpu_ms_per_frame_by_thread",
                "device_cpu_cores_used", "device_peak_rss_mb", "source_frames_in_memory_mb", "ingest_cpu_ms_per_frame", "ingest_peak_rss_mb",
                "broker_cpu_ms_per_frame")


def main(argv: list[str]) -> dict[str, Any]:
    """Without --path: every source × face path in its own process (clean RSS and CPU), side by side."""
    args = parser().parse_args(argv)
    if args.path:
        return run_one(args)
    rest = child_argv(argv)
    results: dict[str, Any] = {"bench": "e2e", "uptime": _uptime(), "side_by_side": {}}
    replay_tmp = None
    models_tmp = None
    if not args.cold_models:  # a device after its first start: prepared models on disk, onnx not imported
        models_tmp = Path(tempfile.mkdtemp(prefix="crowdcap-e2e-models-"))
        warm_model_cache(models_tmp)
        rest = ["--set", f"redact.cache_dir={models_tmp}", *rest]
    if "replay" in args.sources.split(",") and not args.replay_dir:
        from bench._tum_fixture import write_synthetic_tum

        replay_tmp = Path(tempfile.mkdtemp(prefix="crowdcap-e2e-tum-"))
        write_synthetic_tum(replay_tmp, args.replay_frames, args.fps)
        rest += ["--replay-dir", str(replay_tmp)]
    try:
        for source in args.sources.split(","):
            for name in args.paths.split(","):
                section = f"{source}/{name}"
                proc = subprocess.run([sys.executable, "-m", "bench", "e2e", "--source", source, "--path", name,
                                       *rest], capture_output=True, text=True, timeout=900)
                if proc.returncode:
                    results["side_by_side"][section] = {"error": proc.stderr[-2000:]}
                    continue
                results["side_by_side"][section] = json.loads(proc.stdout)
    finally:
        for tmp in (replay_tmp, models_tmp):
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    results["uptime_after"] = _uptime()
    results["summary"] = {k: {n: r.get(k) for n, r in results["side_by_side"].items()} for k in SUMMARY_KEYS}
    results["summary"]["mesh_step_peak_rss_mb"] = {n: (r.get("mesh_step") or {}).get("peak_rss_mb")
                                                  for n, r in results["side_by_side"].items()}
    return results


def child_argv(argv: list[str]) -> list[str]:
    """The arguments every section's process gets: all but --paths / --sources (it runs one of each)."""
    rest = list(argv)
    for flag in ("--paths", "--sources"):
        while flag in rest:
            i = rest.index(flag)
            del rest[i:i + 2]
    return [a for a in rest if a.split("=")[0] not in ("--paths", "--sources")]


def _uptime() -> str:
    try:
        return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _child_cpu_s(name: str) -> tuple[float, int | None]:
    """(CPU seconds, pid) of this process's child whose command is `name` (the broker), or (0, None)."""
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, fields = text[text.index("(") + 1:text.rindex(")")], text.rsplit(")", 1)[1].split()
        if comm == name and int(fields[1]) == me:
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(stat.parent.name)
    return 0.0, None


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    from bench._stage_cpu import instrument
    from device import config as config_mod
    from device import settings
    from device.memory import limit_malloc_arenas
    from device.runtime import Service
    from uplink.embedded import start_broker

    args.set = PATHS[args.path] + args.set if args.path else args.set
    limit_malloc_arenas()  # as `crowdcap run` and `demo` do
    work = Path(tempfile.mkdtemp(prefix="crowdcap-e2e-"))
    url, stop_broker = start_broker()
    ingest: subprocess.Popen[str] | None = None
    try:
        cfg = config_mod.override(config_mod.load(), **{
            "uplink.broker": url, "uplink.spool_dir": str(work / "spool"), "device.state_dir": str(work / "state"),
            "capture.fps": args.fps, "device.id": "bench-e2e"})
        for item in args.set:
            key, _, value = item.partition("=")
            cfg = config_mod.override(cfg, **{key: settings.parse_text(value)})
        n = int(args.seconds * args.fps)
        source = None
        if args.source == "replay":
            if not args.replay_dir:
                raise SystemExit("bench e2e: --source replay needs --replay-dir DIR (a TUM-layout folder)")
            cfg = config_mod.override(cfg, **{"capture.source": f"replay:{args.replay_dir}", "capture.loop": True,
                                              "capture.pace": "realtime"})
        elif args.source == "demo":  # `crowdcap demo`'s walk: the wearer's private things registered
            from device.demo_privacy import OBJECT_SEARCH, prepare

            (work / "demo").mkdir()
            walk = prepare(work / "demo", work / "state", cfg.capture.width, cfg.capture.height, cfg.capture.seed)
            cfg = config_mod.override(cfg, **{"capture.source": "synthetic:private",
                                              "capture.prerender": args.prerender or 30,
                                              "privacy.wifi_file": str(walk["wifi_file"]), **OBJECT_SEARCH})
        elif args.prerender:
            cfg = config_mod.override(cfg, **{"capture.prerender": args.prerender})
        service = Service(cfg, max_frames=n, source=source)
        steps = instrument(service.stages)
        service.source.open()  # pre-rendering happens here, before the clock
        # The ingest starts once the device is ready (models loaded, frames pre-rendered): it exits
        # after 4 s without a message, which a slow start on a busy machine would exceed.
        ingest = subprocess.Popen([sys.executable, "-c", _INGEST, url, str(work / "ingest"), "4"],
                                  stdout=subprocess.PIPE, text=True)
        assert ingest.stdout is not None
        if ingest.stdout.readline().strip() != "ready":
            raise RuntimeError("the ingest could not subscribe")
        broker_cpu0, _ = _child_cpu_s("mosquitto")
        cpu0 = time.process_time()
        t0 = time.monotonic()
        with ThreadCpu() as threads:
            service.start()
            service.wait()
            threads.sample()
            service.stop(timeout=10)
            threads.sample()
        capture_s = time.monotonic() - t0
        delivered = service.drain(60)
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        broker_cpu = _child_cpu_s("mosquitto")[0] - broker_cpu0
        status = service.status()
        redact_stage = service.stages.get("redact")
        bracket = redact_stage.status().get("bracket") if hasattr(redact_stage, "bracket") else None
        cache_mb = source_cache_mb(service.source)  # replay fills its cache while it plays
        service.close()
        out, _ = ingest.communicate(timeout=60)
        ingest_stats = json.loads(out.strip().splitlines()[-1])
    finally:
        if ingest is not None and ingest.poll() is None:
            ingest.kill()
        stop_broker()
    frames = [json.loads(line) for p in (work / "ingest").glob("*/*/frames.jsonl")
              for line in p.read_text().splitlines()]
    # replay keeps the recorded timestamps (t_utc): the ingest's latency is meaningless there
    lat = np.array([f["latency_s"] for f in frames]) * 1000 if frames and args.source != "replay" else np.full(1, np.nan)
    spool_lat = np.array(steps.spool_latency_ms) if steps.spool_latency_ms else np.full(1, np.nan)
    stages = status["stages"]
    withheld_total = sum(stages["redact"]["withheld"].values())  # with split_threads: both parts' (pipeline.py)
    # redact.split_threads: the finish part's thread ("stage-redact-finish") is redaction's too
    redact_cpu_s = sum(threads.by_name().get(name, 0.0)  # and the workers of the work ahead (redact/ahead.py)
                       for name in ("stage-redact", "stage-redact-finish", "redact-forms", "redact-private"))
    return {
        "bench": "e2e",
        "resolution": f"{cfg.capture.width}x{cfg.capture.height}",
        "camera_fps": args.fps,
        "overrides": args.set,
        "face_path": args.path or "as configured",
        "source": (f"replay:{args.replay_dir} (looped, realtime)" if args.source == "replay"
                   else "crowdcap demo's walk: synthetic:private, the wearer's objects/places/zones registered, "
                        f"{args.prerender or 30} frames pre-rendered" if args.source == "demo"
                   else f"synthetic, {args.prerender} frames pre-rendered, played forth and back" if args.prerender
                   else "synthetic, rendered live in the device process"),
        "models": "prepared inside the section (a first start)" if args.cold_models or not any(
            a.startswith("redact.cache_dir=") for a in args.set) else "from a warm disk cache (every start but the first)",
        "seconds": round(capture_s, 2),
        "frames_captured": status["frames_captured"],
        "dropped_before_redaction": status["frames_dropped"],
        "dropped_pct": round(100.0 * status["frames_dropped"] / max(1, status["frames_captured"]), 2),
        "withheld": stages["redact"]["withheld"],
        # key frames / frames that waited for one, the longest wait (frames), frames withheld with their key frame
        "face_bracket": bracket,
        "frames_spooled": stages["uplink"]["frames_out"],
        "frames_ingested": ingest_stats.get("frame", 0),
        "duplicates_at_ingest": ingest_stats.get("duplicate", 0),
        "all_delivered": delivered,
        "output_fps": round(stages["uplink"]["frames_out"] / capture_s, 2),
        "latency_capture_to_ingest_ms": {"p50": round(float(np.percentile(lat, 50)), 1),
                                         "p99": round(float(np.percentile(lat, 99)), 1)},
        "latency_capture_to_spool_ms": {"p50": round(float(np.percentile(spool_lat, 50)), 1),
                                        "p99": round(float(np.percentile(spool_lat, 99)), 1)},
        "stage_latency_ms_p50_p99": {k: [v["latency_ms_p50"], v["latency_ms_p99"]] for k, v in stages.items()},
        "device_cpu_cores_used": round(cpu / wall, 2),
        "device_cpu_ms_per_frame": round(cpu * 1000 / max(1, status["frames_captured"]), 2),
        # the redaction thread's CPU per frame it actually redacted or withheld (drops cost nothing)
        "redact_cpu_ms_per_frame_through_redaction": round(
            redact_cpu_s * 1000 / max(1, stages["uplink"]["frames_out"] + withheld_total), 2),
        "cpu_ms_per_frame_by_thread": {k: round(v * 1000 / max(1, status["frames_captured"]), 2)
                                       for k, v in sorted(threads.by_name().items(), key=lambda kv: -kv[1])
                                       if v > 0},
        "cpu_ms_per_frame_by_step": steps.report(status["frames_captured"]),
        "device_peak_rss_mb": own_peak_rss_mb(),
        "source_frames_in_memory_mb": cache_mb,  # inside the peak: what a camera's driver would hold instead
        "ingest_cpu_ms_per_frame": round(ingest_stats.get("_cpu_s", 0.0) * 1000 / max(1, ingest_stats.get("frame", 0)), 2),
        "ingest_startup_cpu_s": round(ingest_stats.get("_startup_cpu_s", 0.0), 2),
        **ingest_cpu_split(ingest_stats),
        "ingest_peak_rss_mb": round(ingest_stats.get("_peak_rss_mb", 0.0), 1),
        # the stages' CPU over the frames they handled (drops cost nothing, so per captured frame flatters a
        # run that drops)
        "device_cpu_ms_per_frame_through_redaction": round(
            cpu * 1000 / max(1, stages["uplink"]["frames_out"] + withheld_total), 2),
        "broker_cpu_ms_per_frame": round(broker_cpu * 1000 / max(1, status["frames_captured"]), 2),
        "mesh_step": {"skipped": True} if args.no_mesh else mesh_step(work / "ingest"),
        "targets": {"output_fps": ">= 30 sustained", "latency_p99_ms": "<= 150", "peak_rss_mb": "<= 400",
                    "replay": "device <= 25 CPU-ms per captured frame, <= 1 % dropped before redaction"},
    }
