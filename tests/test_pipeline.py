import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from capture.frame import FrameWithheld, RGBDFrame
from capture.synthetic import SyntheticSource
from device.pipeline import DropOldestQueue, Pipeline


class Pass:
    def __init__(self, name):
        self.name = name
        self.seen = []

    def apply(self, frame):
        self.seen.append(frame.seq)
        return frame


class Gate:
    """A stage that blocks until released: lets tests fill queues deterministically."""

    def __init__(self, name):
        self.name = name
        self.open = threading.Event()
        self.entered = threading.Event()
        self.seen = []

    def apply(self, frame):
        self.entered.set()
        assert self.open.wait(10), "gate never opened"
        self.seen.append(frame.seq)
        return frame


class Counting:
    """A source of n frames that records how many were read."""

    def __init__(self, n, size=(64, 48)):
        self.src = SyntheticSource(*size, pace="fast", n_frames=n, noise=False, cycle=2)
        self.intrinsics, self.depth_scale, self.fps = self.src.intrinsics, 1000.0, 30.0
        self.read_count = 0

    def open(self):
        self.src.open()

    def read(self):
        f = self.src.read()
        if f is not None:
            self.read_count += 1
        return f

    def close(self):
        pass


def test_drop_oldest_queue():
    q = DropOldestQueue(2)
    assert not q.put(1) and not q.put(2)
    assert q.put(3)  # 1 dropped
    assert [q.get(0.1), q.get(0.1)] == [2, 3]


def test_all_frames_pass_in_order():
    a, b = Pass("a"), Pass("b")
    p = Pipeline(Counting(50), [a, b], capture_queue=64)
    assert p.run(timeout=20)
    assert b.seen == list(range(50)) and p.snapshot()["frames_out"] == 50
    snap = p.snapshot()["stages"]
    assert snap["a"]["frames_in"] == 50 and snap["b"]["frames_out"] == 50


def test_backpressure_drops_only_before_first_stage():
    """With the first stage stuck, the capture queue drops the oldest (counted); later stages drop nothing."""
    gate, after = Gate("redact"), Pass("uplink")
    src = Counting(40)
    p = Pipeline(src, [gate, after], capture_queue=3, stage_queue=2)
    p.start()
    assert gate.entered.wait(10)
    deadline = time.monotonic() + 10
    while src.read_count < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.open.set()
    assert p.join(20)
    snap = p.snapshot()
    processed = len(after.seen)
    # one frame was inside the gate, three were queued, the rest were dropped — and counted
    assert snap["frames_dropped"] == 40 - processed and snap["frames_dropped"] >= 30
    assert after.seen == sorted(after.seen) and after.seen[-1] == 39  # newest kept, oldest dropped
    assert snap["stages"]["uplink"]["frames_in"] == processed  # nothing lost after acceptance


def test_blocking_after_acceptance_never_drops():
    first, gate = Pass("redact"), Gate("uplink")
    p = Pipeline(Counting(30), [first, gate], capture_queue=64, stage_queue=2)
    p.start()
    assert gate.entered.wait(10)
    gate.open.set()
    assert p.join(20)
    assert gate.seen == first.seen  # everything the first stage accepted reached the last


def test_withheld_and_errors_are_counted():
    class Picky:
        name = "redact"

        def apply(self, frame):
            if frame.seq % 3 == 0:
                raise FrameWithheld("model_timeout")
            if frame.seq % 3 == 1:
                raise RuntimeError("boom")
            return frame

    sink = Pass("uplink")
    p = Pipeline(Counting(30), [Picky(), sink], capture_queue=64)
    assert p.run(timeout=20)
    st = p.snapshot()["stages"]["redact"]
    assert st["withheld"] == {"model_timeout": 10} and st["errors"] == {"RuntimeError": 10}
    assert all(s % 3 == 2 for s in sink.seen) and len(sink.seen) == 10


def test_stop_is_prompt_and_flushes_accepted():
    src = SyntheticSource(64, 48, pace="fast", noise=False, cycle=2)  # endless
    sink = Pass("uplink")
    p = Pipeline(src, [Pass("redact"), sink], capture_queue=4)
    p.start()
    deadline = time.monotonic() + 10
    while len(sink.seen) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    p.stop()
    assert p.join(2.0)
    assert time.monotonic() - t0 < 2.0
    snap = p.snapshot()
    assert snap["stages"]["redact"]["frames_out"] == len(sink.seen)


def test_stalled_stage_detected():
    gate = Gate("redact")
    p = Pipeline(Counting(10), [gate, Pass("uplink")], capture_queue=4)
    p.start()
    assert gate.entered.wait(10)
    deadline = time.monotonic() + 5
    while p.stalled_stage(0.05) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.stalled_stage(0.05) == "redact"
    gate.open.set()
    assert p.join(10)


def test_source_fault_is_a_counted_gap():
    class Flaky(Counting):
        def read(self):
            self.read_count += 1
            if self.read_count in (3, 4):
                from capture.frame import SourceError

                raise SourceError("usb reset")
            return self.src.read()

    sink = Pass("uplink")
    p = Pipeline(Flaky(10), [sink], capture_queue=64)
    assert p.run(timeout=20)
    snap = p.snapshot()
    assert len(sink.seen) == 10 and snap["stages"]["capture"]["errors"] == {"SourceError": 2}
    assert snap["source_faults"][0]["error"] == "usb reset" and snap["source_faults"][0]["seconds"] > 0


@pytest.mark.slow
def test_sigterm_stops_service_within_2s(tmp_path):
    """A real `crowdcap run` process under load exits cleanly within 2 s of SIGTERM."""
    script = textwrap.dedent(f"""
        import sys
        from device.cli import main
        sys.exit(main(["run", "--source", "synthetic", "--pace", "fast", "--spool", {str(tmp_path / 'spool')!r},
                       "--state-dir", {str(tmp_path / 'state')!r}, "--no-redact", "--ready-file",
                       {str(tmp_path / 'ready')!r}]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while not (tmp_path / "ready").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert (tmp_path / "ready").exists(), proc.stderr.read() if proc.poll() is not None else "not ready"
    time.sleep(0.5)  # let it run under load for a moment (not synchronisation)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=10)
    took = time.monotonic() - t0
    assert rc == 0, proc.stderr.read()
    assert took < 2.0 + 1.0  # 2 s budget plus interpreter teardown


def test_frame_type_in_pipeline_is_rgbd():
    sink = Pass("uplink")
    out = []
    p = Pipeline(Counting(3), [sink], on_output=out.append)
    assert p.run(timeout=10)
    assert all(isinstance(f, RGBDFrame) and f.depth.dtype == np.uint16 for f in out)


def test_redaction_off_only_for_replay_and_synthetic(tmp_path):
    """`redact.enabled = false` (also reachable by `config set` on the console or downlink) must not
    let a camera's raw frames reach the spool or the broker: the service refuses to build."""
    from device import config as config_mod
    from device.config import ConfigError
    from device.runtime import RedactionDisabled, build_stages

    base = config_mod.override(config_mod.load(None), **{"redact.enabled": False, "depth.enabled": False})
    for camera in ("realsense", "oakd", "stereo:rig.toml"):
        cfg = config_mod.override(base, **{"capture.source": camera})
        with pytest.raises(ConfigError, match=r"redact\.enabled"):
            build_stages(cfg, "d", "s", record_dir=tmp_path / "rec")
    for trusted in ("synthetic", f"replay:{tmp_path}"):
        cfg = config_mod.override(base, **{"capture.source": trusted})
        assert isinstance(build_stages(cfg, "d", "s", record_dir=tmp_path / "rec")[0], RedactionDisabled)


def test_accepted_frames_left_in_a_stuck_stage_are_counted():
    """A join that times out at shutdown says how many accepted frames were not stored."""
    first, gate = Pass("redact"), Gate("uplink")
    p = Pipeline(Counting(10), [first, gate], capture_queue=64, stage_queue=4)
    p.start()
    assert gate.entered.wait(10)
    deadline = time.monotonic() + 10
    while len(first.seen) < 6 and time.monotonic() < deadline:  # 1 in the gate, 4 queued, 1 blocked
        time.sleep(0.01)
    p.stop()
    assert not p.join(0.2)
    assert p.unfinished() == len(first.seen) == 6
    gate.open.set()
    assert p.join(10)
    assert p.unfinished() == 0 and len(gate.seen) == 10


def test_unexpected_source_exception_is_a_gap_not_the_end():
    """A camera driver raising something other than SourceError (an odd frame, a bug) must not end
    capture for good: `run` would exit 0 and systemd (Restart=on-failure) would never restart it."""
    class Glitchy:
        def __init__(self):
            self.inner = Counting(10)
            self.calls = 0
            self.opens = 0

        def open(self):  # the reconnect after the first glitch fails too, with an SDK's own error
            self.opens += 1
            if self.opens == 1:
                raise RuntimeError("usb reset in progress")

        def close(self):
            pass

        def read(self):
            self.calls += 1
            if self.calls in (3, 4):
                raise ValueError("depth: size 80×60 does not match color 160×120")
            return self.inner.read()

    sink = Pass("redact")
    p = Pipeline(Glitchy(), [sink], capture_queue=64)
    assert p.run(timeout=20)
    snap = p.snapshot()
    assert len(sink.seen) == 10 and snap["stages"]["capture"]["errors"] == {"ValueError": 2}
    assert snap["source_faults"][0]["error"].startswith("ValueError: depth")


def test_the_device_keeps_prepared_models_in_its_state_folder(tmp_path):
    """After the first start no model is prepared again (onnx, ~22 MB resident, is not imported)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from device import config as config_mod\n"
            "from device.runtime import build_stages\n"
            f"cfg = config_mod.override(config_mod.load(None), **{{'device.state_dir': {str(tmp_path)!r}, "
            "'depth.enabled': False, 'privacy.enabled': False})\n"
            f"build_stages(cfg, 'd', 's', record_dir={str(tmp_path / 'rec')!r})\n"
            "print('onnx' in sys.modules)\n")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    cached = list((tmp_path / "model-cache").glob("*.onnx"))
    assert cached and first.stdout.split()[-1] == "True"  # prepared once, here
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.split()[-1] == "False"  # read from the cache, checked against its digest
