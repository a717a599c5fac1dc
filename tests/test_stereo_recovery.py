"""Unplug / replug: a stereo source whose image folder vanishes mid-stream and comes back.

The real pipeline retries with backoff, reconnects (close + open), records the gap in
`source_faults`, and no frame is lost or duplicated across it.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
from test_stereo import ideal_calibration, render_pair

from capture import open_source
from capture.frame import RGBDFrame
from capture.scene import build_scene
from capture.synthetic import trajectory_pose
from device.pipeline import Pipeline

N_FRAMES = 16


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.seqs: list[int] = []

    def apply(self, frame: RGBDFrame) -> RGBDFrame:
        self.seqs.append(frame.seq)
        return frame


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)  # polling a condition, bounded by the deadline


@pytest.mark.slow
def test_folder_unplug_replug_is_a_gap_not_a_crash(tmp_path: Path) -> None:
    calib = ideal_calibration()
    left, right = render_pair(calib, build_scene(0), trajectory_pose(0.0))
    for side, image in (("left", left), ("right", right)):
        (tmp_path / side).mkdir()
        cv2.imwrite(str(tmp_path / side / "0000.png"), image)
        for i in range(1, N_FRAMES):
            shutil.copyfile(tmp_path / side / "0000.png", tmp_path / side / f"{i:04d}.png")
    config = tmp_path / "rig.yaml"
    calib.save(config, left="left", right="right")

    source = open_source(f"stereo:{config}", device_id="rig")
    source.open()
    sink = Collect()
    pipeline = Pipeline(source, [sink], capture_queue=64)
    pipeline.start()
    _wait_for(lambda: pipeline.capture.frames_in >= 3)
    (tmp_path / "left").rename(tmp_path / "left-unplugged")  # the card / camera goes away
    _wait_for(lambda: pipeline.capture.errors["SourceError"] >= 3)  # retried with backoff, still down
    (tmp_path / "left-unplugged").rename(tmp_path / "left")  # and comes back
    done = threading.Event()
    threading.Thread(target=lambda: (pipeline.join(30), done.set()), daemon=True).start()
    assert done.wait(30) and pipeline.finished.is_set()

    assert sink.seqs == list(range(N_FRAMES))  # nothing lost or repeated across the gap
    faults = pipeline.source_faults
    assert len(faults) == 1 and "image folder" in faults[0]["error"] and "left" in faults[0]["error"]
    assert faults[0]["seconds"] >= 0.1 + 0.2  # at least the first two backoff waits
