"""Detectors prove they see (issue 16): a model that loads and runs but finds nothing — all-zero
outputs, the real CenterFace with one bias changed (card hash updated), a model that goes silent after
K frames — never lets a face through. Leaks are counted through the real pipeline (tests/leak_count.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from leak_count import count_leaks

from redact import build_stage, reference
from redact.cards import default_card_path, load_card
from redact.config import RedactConfig
from redact.detector import Detector
from redact.proof import prove
from redact.runtime import Session
from redact.testing import write_biased_centerface, write_blind, write_constant

N = 24


def test_shipped_centerface_proves_itself() -> None:
    stage = build_stage(RedactConfig())
    assert stage.load_error == ""
    (proof,) = stage.status()["canary"]["self_test"]
    assert proof["ok"] and "3/3 face" in proof["detail"]
    r = count_leaks(stage, N)
    assert r["faces"] > 20 and r["leaks"] == 0 and r["depth_leaks"] == 0, r
    # the canary runs with the face detection: on every key frame of the face bracket (redact/bracket.py)
    st = stage.status()
    assert st["canary"]["runs"] == st["bracket"]["frames_key"] and st["canary"]["misses"] == 0


@pytest.mark.parametrize("make", [write_blind, write_biased_centerface], ids=["zeros", "biased-centerface"])
def test_a_model_that_sees_nothing_is_not_loaded(tmp_path: Path, make: Any) -> None:
    card = make(tmp_path)
    load_card(card)  # a valid card whose sha256 matches the file: `models verify` would say ok
    unproven = build_stage(RedactConfig(models=[str(card)]), _prove=False)
    unproven.canary.every = 0  # neither proof nor canary, as before
    before = count_leaks(unproven, N)  # what happened before the proof: every face went out sharp
    assert before["faces"] > 20 and before["leaks"] == before["faces"], before

    stage = build_stage(RedactConfig(models=[str(card)]))
    assert "self-test" in stage.load_error and "found 0 of 3 known faces" in stage.load_error, stage.load_error
    assert str(card) in stage.status()["load_error"]
    r = count_leaks(stage, N)
    assert r["leaks"] == 0 and r["frames_out"] == 0, r
    assert stage.status()["frames_withheld"]["no_model"] == N


class SilentAfter:
    """A session that runs the real CenterFace for `k` runs, then a real all-zeros model."""

    def __init__(self, real: Session, silent: Session, k: int) -> None:
        self.real, self.silent, self.k, self.runs = real, silent, k, 0
        self.card, self.input_name, self.output_names = real.card, real.input_name, real.output_names

    def run(self, blob: np.ndarray, run_options: Any) -> dict[str, np.ndarray]:
        self.runs += 1
        return (self.real if self.runs <= self.k else self.silent).run(blob, run_options)


# The blind stand-in below is CenterFace-shaped: these stages run CenterFace alone (not the built-in path).
CENTERFACE = {"models": [str(default_card_path())], "detect_width": 384, "detect_height": 288,
              "budget_ms": 5000.0, "face_every": 1}  # the old schedule (several runs a frame); coverage, not timing, is tested


def silent_after(stage: Any, blind_card: Path, k: int) -> SilentAfter:
    det = stage.detectors[0]
    det.session = SilentAfter(det.session, Session(load_card(blind_card), 1), k)
    return det.session


@pytest.mark.parametrize("every", [1, 3])
def test_a_model_that_goes_silent_is_caught_by_the_canary(tmp_path: Path, every: int) -> None:
    blind = write_blind(tmp_path)
    stage = build_stage(RedactConfig(canary_every=every, **CENTERFACE))
    assert stage.load_error == ""
    silent_after(stage, blind, k=30)  # ~10 frames of runs (whole pass, mosaic, tiles, canary)
    r = count_leaks(stage, N)
    st = stage.status()
    assert r["leaks"] == 0 and r["depth_leaks"] == 0, r
    assert 0 < r["frames_out"] < N and st["frames_withheld"]["canary_missed"] == N - r["frames_out"], (r, st)
    assert st["canary"]["state"] == "failing" and "canary was not found" in st["last_fault"]

    # Without the canary (as before) the same fault leaks every face after the K-th run.
    stage = build_stage(RedactConfig(hold_frames=0, **CENTERFACE))
    stage.canary.every = 0
    silent_after(stage, blind, k=30)
    r = count_leaks(stage, N)
    assert r["leaks"] > 10, r


def test_canary_recovers_when_the_model_sees_again(tmp_path: Path) -> None:
    stage = build_stage(RedactConfig(**(CENTERFACE | {"budget_ms": 10000.0})))  # warm-ups: no timeouts
    session = silent_after(stage, write_blind(tmp_path), k=0)
    from capture.frame import FrameWithheld
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(pace="fast", n_frames=4)
    src.open()
    with pytest.raises(FrameWithheld, match="canary"):
        stage.apply(src.read())
    session.k = 10**9  # the fault clears
    stage.apply(src.read())
    assert stage.status()["canary"]["state"] == "ok"


def test_other_classes_register_reference_frames(tmp_path: Path) -> None:
    """Class-generic: a class with registered reference frames must be found too; one without is
    loaded but listed as unproven."""
    from redact.testing import centerface_outputs  # noqa: F401  (the same builders serve any decoder)

    rows = np.array([[[40, 40, 20, 20, 0.9, 0.9]]], np.float32)  # yolo: one "plate" box at (30..50)
    card = write_constant(tmp_path, "plates", {"out": rows}, "yolo", ["plate"], {"layout": "yolov5"})
    det = Detector(load_card(card), threads=1)
    assert prove(det)["ok"] and prove(det)["unproven"] == ["plate"]
    img = np.zeros((64, 64, 3), np.uint8)
    try:
        reference.register("plate", lambda: [reference.Reference("plate", "t", img, ((30, 30, 50, 50),))])
        assert prove(det)["ok"]
        reference.register("plate", lambda: [reference.Reference("plate", "t", img, ((5, 5, 20, 20),))])
        p = prove(det)
        assert not p["ok"] and "found 0 of 1 known plates" in p["detail"]
    finally:
        reference._frames.pop("plate", None)
        reference._cache.pop(("plate", "frames"), None)


def test_shipped_text_and_person_detectors_prove_themselves() -> None:
    from redact.cards import shipped_card

    for stem, cls, want in (("ppocr_det", "text", "2/2"), ("ssdlite_person", "person", "1/1")):
        p = prove(Detector(load_card(shipped_card(stem)), threads=1))
        assert p["ok"] and p["found"] == {cls: want}, p
