"""Redaction over two pipeline threads (redact/split.py): faces ("redact") then the rest
("redact-finish"), with the work that needs no faces ahead in two workers (redact/ahead.py: the
forms' passes in "redact-forms", the private layer in "redact-private"). Real RetinaFace int8 +
CenterFace + PP-OCR models, the astronaut photo on a panning wall, the real private layer (a hostile
subclass raising on chosen frames), a real Pipeline."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from capture.frame import FrameWithheld, RGBDFrame
from device.pipeline import Pipeline
from redact import build_stage
from redact.config import RedactConfig
from redact.private.config import PrivacyConfig
from redact.private.layer import PrivateLayer
from redact.split import Covered, RedactFinish
from redact.stage import RedactStage
from tests.test_face_bracket import leaks, panning_frame
from tests.test_redact_stage import BUDGET_MS

N = 12


class Pan:
    """The pan of tests/test_face_bracket.py as an offline source (backpressure: no frame dropped)."""

    offline = True
    fps = 30.0
    depth_scale = 1000.0

    def __init__(self, n: int = N) -> None:
        self.n, self.k = n, 0
        self.boxes: dict[int, Any] = {}
        self.inputs: dict[int, RGBDFrame] = {}
        self.intrinsics = panning_frame(0, False)[0].intrinsics

    def open(self) -> None:
        pass

    def read(self) -> RGBDFrame | None:
        if self.k >= self.n:
            return None
        frame, box = panning_frame(self.k, face=self.k >= 2)
        self.inputs[self.k], self.boxes[self.k] = frame, box
        self.k += 1
        return frame

    def close(self) -> None:
        pass


class Collect:
    name = "after"

    def __init__(self) -> None:
        self.out: list[RGBDFrame] = []
        self.lock = threading.Lock()

    def apply(self, frame: RGBDFrame) -> RGBDFrame:
        assert frame.redaction is not None  # nothing unredacted leaves the finish stage
        with self.lock:
            self.out.append(frame)
        return frame


class HostileLayer(PrivateLayer):
    """The wearer's real private layer, made to fail on chosen frames: `apply` raises on `raise_on`
    (→ private_error), `coverage` (outside the layer's guarded call) raises on `bug_on` (→ finish_error)."""

    def __init__(self, state_dir: Path, raise_on: set[int], bug_on: set[int]) -> None:
        super().__init__(state_dir, PrivacyConfig())
        self.raise_on, self.bug_on, self.seq = raise_on, bug_on, -1
        self.threads: set[str] = set()
        self.seen: list[int] = []

    def apply(self, frame: RGBDFrame, color: np.ndarray, depth: np.ndarray) -> Any:
        self.seq = frame.seq
        self.threads.add(threading.current_thread().name)
        self.seen.append(frame.seq)
        if frame.seq in self.raise_on:
            raise RuntimeError("hostile private layer")
        return super().apply(frame, color, depth)

    def coverage(self) -> dict[str, Any]:
        if self.seq in self.bug_on:
            raise KeyError("hostile coverage")
        return super().coverage()


def split_stage(tmp_path: Path, raise_on: set[int] = frozenset(), bug_on: set[int] = frozenset(),
                private_thread: bool = False) -> RedactStage:
    stage = build_stage(RedactConfig(budget_ms=BUDGET_MS, face_every=3, private_thread=private_thread),
                        private=HostileLayer(tmp_path, raise_on, bug_on))
    assert stage.load_error == ""
    return stage


def run(stage: RedactStage, n: int = N) -> tuple[Pipeline, Pan, Collect, RedactFinish]:
    stages = stage.pipeline_stages()
    assert [s.name for s in stages] == ["redact", "redact-finish"]
    src, after = Pan(n), Collect()
    p = Pipeline(src, [*stages, after], capture_queue=64, stage_queue=8)
    assert p.run(timeout=300), "pipeline did not end"
    return p, src, after, stages[-1]


def test_split_stages_cover_every_face_in_order_with_right_counts(tmp_path: Path) -> None:
    stage = split_stage(tmp_path)
    p, src, after, finish = run(stage)
    assert [f.seq for f in after.out] == list(range(N))  # frame order kept across the two threads
    assert leaks([(src.inputs[f.seq], f, src.boxes[f.seq]) for f in after.out]) == []
    snap = p.snapshot()
    assert snap["frames_dropped"] == 0 and snap["frames_out"] == N and p.unfinished() == 0
    assert p._queues[1].maxsize == 3  # finish's input queue: one bracket's release (face_every), not stage_queue
    assert snap["stages"]["redact-finish"]["frames_out"] == N and snap["stages"]["redact"]["frames_out"] == N
    # two threads: the face part in the pipeline's "redact" thread, the rest in "redact-finish"'s
    st = finish.status()
    assert st["thread"] == "stage-redact-finish" and st["face_thread"] == "stage-redact"
    assert st["frames_finished"] == N and stage.status()["split_threads"] is True
    assert stage.status()["frames_redacted"] == N
    assert {f.redaction["coverage"] for f in after.out} == {"detected", "bracketed"}


def test_a_finish_side_fault_withholds_that_frame_only_counted_with_its_reason(tmp_path: Path) -> None:
    stage = split_stage(tmp_path, raise_on={4}, bug_on={7})  # 4: bracketed, 7: bracketed; both in frame order
    p, src, after, finish = run(stage)
    assert [f.seq for f in after.out] == [k for k in range(N) if k not in (4, 7)]  # the stream goes on
    assert leaks([(src.inputs[f.seq], f, src.boxes[f.seq]) for f in after.out]) == []
    snap = p.snapshot()
    assert snap["stages"]["redact-finish"]["withheld"] == {"private_error": 1, "finish_error": 1}
    assert not p.metrics["redact"].withheld and not snap["stages"]["redact-finish"]["errors"]  # counted once
    assert snap["frames_out"] == N - 2 and p.unfinished() == 0  # frames_out = in - withheld
    # readers of "redact" (status, exits, console, demo) see redaction as a whole: both parts' withholds
    assert snap["stages"]["redact"]["withheld"] == {"private_error": 1, "finish_error": 1}
    assert snap["stages"]["redact"]["frames_out"] == N - 2 and snap["stages"]["redact"]["parts"] == ["redact-finish"]
    st = stage.status()
    assert st["frames_withheld"] == {"private_error": 1, "finish_error": 1} and st["faults"] == st["frames_withheld"]
    assert finish.status()["frames_withheld"] == {"private_error": 1, "finish_error": 1}


def test_a_face_part_withholding_passes_through_counted_once(tmp_path: Path) -> None:
    stage = split_stage(tmp_path)
    stage.load_error = "hostile: no model"  # every key frame's detection fails: its bracket is withheld
    p, _, after, finish = run(stage, 6)
    snap = p.snapshot()["stages"]
    assert after.out == [] and snap["redact"]["withheld"] == {"no_model": 6}
    assert snap["redact-finish"]["frames_in"] == 0 and snap["redact-finish"]["withheld"] == {}
    assert p.unfinished() == 0 and stage.status()["frames_withheld"] == {"no_model": 6}


def test_the_finish_stage_refuses_anything_but_covered_items(tmp_path: Path) -> None:
    finish = RedactFinish(split_stage(tmp_path))
    frame, _ = panning_frame(0, face=True)
    with pytest.raises(TypeError):  # a raw frame is never passed on (the pipeline counts the error)
        finish.apply(frame)


def test_apply_and_push_without_split_still_do_both_parts(tmp_path: Path) -> None:
    stage = build_stage(RedactConfig(budget_ms=BUDGET_MS, face_every=3, split_threads=False))
    assert stage.pipeline_stages() == [stage]
    stage.cfg.split_threads = True
    assert [s.name for s in stage.pipeline_stages()] == ["redact", "redact-finish"]  # push/flush unchanged by it
    frame, _ = panning_frame(3, face=True)
    assert isinstance(stage.apply(frame), RGBDFrame)
    released = [stage.push(panning_frame(k, face=True)[0]) for k in range(3)] + [stage.flush()]
    items = [o for batch in released for o in batch]
    assert [type(o) for o in items] == [RGBDFrame] * 3 and not any(isinstance(o, (Covered, FrameWithheld))
                                                                      for o in items)


def test_private_layer_ahead_in_its_worker_same_frames_same_order(tmp_path: Path) -> None:
    """redact.private_thread: the wearer's layer in the "redact-private" worker, while frames wait."""
    stage = split_stage(tmp_path, private_thread=True)
    p, src, after, finish = run(stage)
    assert [f.seq for f in after.out] == list(range(N))
    assert leaks([(src.inputs[f.seq], f, src.boxes[f.seq]) for f in after.out]) == []
    snap = p.snapshot()
    assert snap["frames_dropped"] == 0 and snap["frames_out"] == N and p.unfinished() == 0
    assert snap["stages"]["redact"]["frames_out"] == N and snap["stages"]["redact"]["parts"] == ["redact-finish"]
    layer = stage.private
    assert layer.threads == {"redact-private"} and layer.seen == list(range(N))  # its worker, frame order
    assert finish.status()["thread"] == "stage-redact-finish" and stage.status()["frames_redacted"] == N


def test_a_private_fault_ahead_withholds_that_frame_only(tmp_path: Path) -> None:
    stage = split_stage(tmp_path, raise_on={4}, bug_on={7}, private_thread=True)
    p, src, after, finish = run(stage)
    assert [f.seq for f in after.out] == [k for k in range(N) if k not in (4, 7)]  # the stream goes on
    assert leaks([(src.inputs[f.seq], f, src.boxes[f.seq]) for f in after.out]) == []
    snap = p.snapshot()
    # coverage() runs inside the worker's call too: both are private_error, counted once, by the finish
    assert snap["stages"]["redact-finish"]["withheld"] == {"private_error": 2} and not p.metrics["redact"].withheld
    assert snap["stages"]["redact"]["withheld"] == {"private_error": 2} and snap["frames_out"] == N - 2
    assert p.unfinished() == 0 and stage.status()["frames_withheld"] == {"private_error": 2}


def test_a_private_fault_ahead_under_obscure_passes_the_obscured_frame_on(tmp_path: Path) -> None:
    stage = split_stage(tmp_path, raise_on={5}, private_thread=True)
    import dataclasses

    stage._policy = dataclasses.replace(stage.policy, on_fault="obscure")
    p, _, after, _ = run(stage)
    assert [f.seq for f in after.out] == list(range(N))  # none lost: frame 5 obscured, not withheld
    five = next(f for f in after.out if f.seq == 5)
    assert five.redaction["coverage"] == "obscured" and not five.color.any() and not five.depth.any()
    assert p.snapshot()["stages"]["redact"]["withheld"] == {} and p.unfinished() == 0


def test_a_frame_the_face_part_obscured_passes_the_finish_as_it_is(tmp_path: Path) -> None:
    import dataclasses

    stage = split_stage(tmp_path)
    stage._policy = dataclasses.replace(stage.policy, on_fault="obscure")
    stage.load_error = "hostile: no model"  # every key frame fails: its bracket is obscured, not withheld
    p, _, after, _ = run(stage, 6)
    assert [f.seq for f in after.out] == list(range(6)) and p.unfinished() == 0
    assert all(f.redaction["coverage"] == "obscured" and not f.color.any() for f in after.out)
