"""bench e2e's own parts: the per-step CPU instrumentation sees every stage's work, and sections get
their arguments. (The bench itself is run by hand: it takes minutes and its numbers are never asserted.)"""

import subprocess
import sys

from bench._stage_cpu import instrument
from bench._tum_fixture import write_synthetic_tum
from bench.e2e import child_argv


def test_child_argv_drops_the_section_lists_only():
    argv = ["--paths", "old_centerface,new_default", "--seconds", "5", "--sources=replay", "--set", "a=1"]
    assert child_argv(argv) == ["--seconds", "5", "--set", "a=1"]


def test_help_names_the_sections():
    out = subprocess.run([sys.executable, "-m", "bench", "e2e", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "--sources" in out.stdout and "replay" in out.stdout and "old_centerface" in out.stdout


def test_instrument_counts_every_step_of_a_replayed_run(tmp_path):
    from device import config as config_mod
    from device.runtime import Service

    folder = write_synthetic_tum(tmp_path / "tum", frames=4)
    cfg = config_mod.override(config_mod.load(), **{
        "capture.source": f"replay:{folder}", "capture.pace": "fast", "capture.loop": True,
        "uplink.spool_dir": str(tmp_path / "spool"), "device.state_dir": str(tmp_path / "state"),
        "redact.budget_ms": 10000.0})  # a busy machine must not withhold frames here
    service = Service(cfg, max_frames=8)
    steps = instrument(service.stages)
    try:
        service.start()
        service.wait()
        assert service.stop(timeout=60)
        status = service.status()
    finally:
        service.close()
    assert status["frames_captured"] == 8 and status["frames_dropped"] == 0
    report = steps.report(8)
    assert "missing" not in report, report.get("missing")
    assert report["redact.total"]["calls"] == 8
    assert report["depth.odometry"]["calls"] == 8
    assert report["uplink.spool_write"]["calls"] >= 8  # frames, plus keyframe clouds
    assert len(steps.spool_latency_ms) == 8 and min(steps.spool_latency_ms) > 0


def test_mesh_step_reports_its_own_rss_and_cpu(tmp_path):
    """The mesh fusion step runs on what the ingest wrote, in its own process, and says what it cost."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from uplink_helpers import make_frame

    from bench.e2e import mesh_step
    from uplink import messages, wire
    from uplink.backend.ingest import Ingest

    assert "error" in mesh_step(tmp_path / "nothing")  # no session: said so, not a traceback
    ing = Ingest("mqtt://127.0.0.1:1", tmp_path / "ingest")
    codec = messages.depth_codec("delta-zstd")
    for seq in range(0, 40, 2):
        msg = messages.encode_frame(make_frame(seq, keyframe=seq % 10 == 0), codec, 80)
        assert ing.handle("crowdcap/v1/dev1/frame", wire.single_chunk(wire.encode(msg))) == "frame"
    ing.sink.finalize_all()
    got = mesh_step(tmp_path / "ingest")
    assert got["ok"] and got["mesh_kb"] > 0, got
    assert got["peak_rss_mb"] > 50 and got["cpu_s"] > 0  # a real process that imported open3d and fused


def test_a_child_reports_its_own_peak_rss_not_its_parents():
    """ru_maxrss carries the parent's RSS at fork across exec; the bench's processes report VmHWM."""
    import numpy as np

    held = np.ones(400 * 2**20 // 8)  # this (parent) process holds 400 MB while the child starts
    code = "from bench.e2e import own_peak_rss_mb; print(own_peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert held[0] == 1 and out.returncode == 0, out.stderr
    assert 5 < float(out.stdout) < 300, out.stdout


def test_ingest_cpu_split_takes_the_report_out_of_the_per_frame_figure():
    from bench._e2e_extras import ingest_cpu_split

    got = ingest_cpu_split({"frame": 100, "_cpu_s": 1.5, "_finalize_cpu_s": 0.5, "sink": {"depth_png_fast": 100}})
    assert got == {"ingest_cpu_ms_per_frame_without_report": 10.0, "ingest_report_cpu_s": 0.5,
                   "ingest_depth_png": {"depth_png_fast": 100}}
    assert ingest_cpu_split({})["ingest_cpu_ms_per_frame_without_report"] == 0.0  # nothing arrived: no crash


def test_source_cache_is_reported_for_synthetic_and_replay(tmp_path):
    from bench._e2e_extras import source_cache_mb
    from capture import open_source
    from capture.wrapped import WrappedSource

    src = open_source("synthetic", pace="fast", n_frames=4, prerender=4, width=64, height=48)
    src.open()
    assert source_cache_mb(WrappedSource(src)) == round(4 * 64 * 48 * (3 + 2) / 1e6, 1)  # through a wrapper
    assert source_cache_mb(open_source("synthetic", pace="fast", n_frames=4, width=64, height=48)) == 0.0
