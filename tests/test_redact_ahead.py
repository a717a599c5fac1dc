"""Work that needs no faces, run ahead while frames wait for their face bracket (redact/ahead.py) and
the forms schedule's two halves (redact/passes.py, redact/schedule.py). Real models (RetinaFace,
CenterFace, PP-OCR), the synthetic scene with its plates and text, a real Pipeline."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from capture.frame import FrameWithheld, RGBDFrame
from device.pipeline import Pipeline
from redact import build_stage
from redact.ahead import Worker
from redact.config import RedactConfig
from tests.test_redact_split import Collect

N = 30


@pytest.fixture(scope="module")
def frames() -> list[RGBDFrame]:
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(640, 480, pace="fast", n_frames=N)
    src.open()
    return list(iter(src.read, None))


class Frames:
    """Pre-rendered frames as an offline source (backpressure: none dropped)."""

    offline = True
    fps = 30.0
    depth_scale = 1000.0

    def __init__(self, frames: list[RGBDFrame]) -> None:
        self.frames, self.k = frames, 0
        self.intrinsics = frames[0].intrinsics

    def open(self) -> None:
        pass

    def read(self) -> RGBDFrame | None:
        if self.k >= len(self.frames):
            return None
        self.k += 1
        return self.frames[self.k - 1]

    def close(self) -> None:
        pass


def cfg(tmp_path: Path, **kw: Any) -> RedactConfig:
    p = tmp_path / "p.toml"
    p.write_text('version = "t"\n[[rules]]\nclass = "face"\n[[rules]]\nclass = "plate"\n'
                 '[[rules]]\nclass = "text"\n')
    return RedactConfig(**{"policy": str(p), "floor": "lowered", "budget_ms": 10000.0, "face_every": 4,
                           "text_every": 6, **kw})


def regions(f: RGBDFrame) -> list[tuple[str, tuple[int, ...]]]:
    return sorted((r["class"], tuple(r["bbox"])) for r in f.redaction["regions"])


def test_forms_ahead_in_their_worker_give_what_one_thread_gives(frames: list[RGBDFrame], tmp_path: Path) -> None:
    one = build_stage(cfg(tmp_path, split_threads=False))
    inline = [o for f in frames for o in one.push(f)] + one.flush()
    assert all(isinstance(o, RGBDFrame) for o in inline) and len(inline) == N
    one.close()

    stage = build_stage(cfg(tmp_path))
    threads: list[str] = []
    look = stage.forms.look

    def traced(*a: Any) -> Any:
        threads.append(threading.current_thread().name)
        return look(*a)

    stage.forms.look = traced
    after = Collect()
    p = Pipeline(Frames(frames), [*stage.pipeline_stages(), after], capture_queue=64, stage_queue=8)
    assert p.run(timeout=300), "pipeline did not end"
    assert [f.seq for f in after.out] == [f.seq for f in inline] and p.unfinished() == 0
    assert set(threads) == {"redact-forms"} and len(threads) == N  # every frame's passes, in the worker
    for a, b in zip(inline, after.out, strict=True):  # the same regions, class by class, frame by frame
        assert regions(a) == regions(b), a.seq
        assert a.redaction["classes"] == b.redaction["classes"], a.seq
    # no text pass on a face key frame but the first (passes wait a frame: redact/passes.py `key`)
    text_on = [f for f in after.out if f.redaction["classes"]["text"]["coverage"] == "detected"]
    assert text_on and all(f.redaction["coverage"] == "bracketed" for f in text_on[1:])
    passes = stage.status()["forms"]["passes"]
    assert passes["text"] == N // 6 and passes.get("text_edge", 0) >= 1
    # the forms' holds moved with the bracket's camera shift: the schedule measured none itself
    assert stage.forms.passes._motion._prev is None
    stage.close()


def test_a_frame_that_never_reaches_the_second_half_leaves_a_gap_it_closes(frames: list[RGBDFrame],
                                                                             tmp_path: Path) -> None:
    """A frame withheld before its finish (its bracket's key frame failed) never reaches `step`: the
    next frame's holds move by the summed shift and age by the frames between; a pass the step never
    absorbed vouches for nothing, so coverage lapses (withheld) until the next pass."""
    from redact.schedule import FormSchedule

    c = cfg(tmp_path, text_every=3, hold_frames=1)
    stage = build_stage(c)
    every_frame, gappy, absorbing = (FormSchedule(c, stage.policy, ["face"], stage.forms.models) for _ in range(3))
    got: list[Any] = []
    kept: list[Any] = []
    for k, f in enumerate(frames[:8]):
        t0 = time.perf_counter()
        a, b, d = (s.look(f.color, None, t0) for s in (every_frame, gappy, absorbing))
        every_frame.step(f, stage.policy, [], t0, 0.0, a)
        if k in (1, 3):  # withheld before its finish: its passes absorbed (AheadRunner.hand, Ahead.before)
            absorbing.absorb(f.color, d)
        else:
            kept.append(absorbing.step(f, stage.policy, [], t0, 0.0, d)[2]["classes"]["text"]["age"])
        if k == 1:  # no pass on this frame: only the holds' stepping is left out
            continue
        if k == 3:  # the text pass on this frame (passes on 0, 3, 6) is never absorbed
            assert "text" in b.fresh
            continue
        try:
            got.append(gappy.step(f, stage.policy, [], t0, 0.0, b)[2]["classes"]["text"])
        except FrameWithheld as e:
            got.append(e.reason)
        if k == 2:  # the gap of frame 1 closed: the same holds as stepping every frame
            for name, h in every_frame.holds.items():
                np.testing.assert_allclose(gappy.holds[name].boxes, h.boxes)
                assert (gappy.holds[name].age == h.age).all()
    # frames 0, 2, 4, 5, 6, 7: limit max(3 + 1, 1) = 4 frames since the last absorbed pass (frame 0)
    assert got == [{"coverage": "detected", "age": 0}, {"coverage": "held", "age": 2},
                   {"coverage": "held", "age": 4}, "no_coverage", {"coverage": "detected", "age": 0},
                   {"coverage": "held", "age": 1}]
    assert kept == [0, 2, 1, 2, 0, 1]  # frames 0 2 4 5 6 7: frame 3's pass absorbed, coverage goes on from it
    stage.close()


def test_withheld_frames_hand_their_passes_to_the_next_covered_frame(frames: list[RGBDFrame],
                                                                     tmp_path: Path) -> None:
    from redact.ahead import MAX_WITHHELD, AheadRunner
    from redact.split import Covered

    stage = build_stage(cfg(tmp_path))
    runner = AheadRunner()
    for f in frames[:3 + MAX_WITHHELD]:
        runner.start(f, None, stage.forms, None, time.perf_counter)
    withheld = [FrameWithheld("model_timeout", "key frame") for _ in range(2 + MAX_WITHHELD)]
    last = Covered(frames[2 + MAX_WITHHELD], stage.policy, [], 0.0, 0.0, {})
    out = runner.hand([*withheld, last], Covered, lambda item: pytest.fail("frames are in order"))
    assert out[:-1] == withheld and out[-1] is last
    # the newest MAX_WITHHELD withheld frames' passes are absorbed first; older ones are forgotten
    assert [a.frame.seq for a in last.ahead.before] == [f.seq for f in frames[2:2 + MAX_WITHHELD]]
    looks = last.ahead.looks(time.perf_counter())
    assert [lk.n for _, lk in looks] == list(range(1, MAX_WITHHELD + 2))  # the passes ran in frame order
    stray = Covered(frames[0], stage.policy, [], 0.0, 0.0, {})  # a frame not the next one started
    assert runner.hand([stray], Covered, lambda item: "mismatch") == ["mismatch"]
    stage.close()


def test_a_fault_in_a_pass_ahead_withholds_its_frame_and_lapses_the_class(frames: list[RGBDFrame],
                                                                         tmp_path: Path) -> None:
    from redact.runtime import ModelRunError

    stage = build_stage(cfg(tmp_path, text_every=3))
    det = stage.forms.models.get("text")
    run = det.run
    calls = {"n": 0}

    def broken(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the second whole pass (frame 3)
            raise ModelRunError("model_error", "hostile: the text model broke")
        return run(*a, **k)

    det.run = broken
    after = Collect()
    p = Pipeline(Frames(frames[:8]), [*stage.pipeline_stages(), after], capture_queue=64, stage_queue=8)
    assert p.run(timeout=300)
    assert 3 not in [f.seq for f in after.out]  # withheld with the model's reason, counted once
    assert sum(p.snapshot()["stages"]["redact"]["withheld"].values()) == 8 - len(after.out)
    # the pass is due again on the next frame that is not a face key frame (4 is one: redact/passes.py)
    coverage = {f.seq: f.redaction["classes"]["text"]["coverage"] for f in after.out}
    assert coverage[4] == "held" and coverage[5] == "detected"
    stage.close()


def test_a_worker_runs_in_order_and_a_slow_result_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from redact import ahead

    w = Worker("t-worker")
    seen: list[int] = []
    futs = [w.submit(lambda i=i: seen.append(i) or threading.current_thread().name) for i in range(50)]
    assert [f.result(timeout=10) for f in futs] == ["t-worker"] * 50 and seen == list(range(50))
    gate = threading.Event()
    slow = w.submit(lambda: gate.wait(10))
    monkeypatch.setattr(ahead, "WAIT_S", 0.05)
    with pytest.raises(FrameWithheld) as e:  # the finish does not wait forever on a hung worker
        ahead._result(slow, "the forms' detector passes")
    assert e.value.reason == "model_timeout"
    gate.set()
    w.close()
