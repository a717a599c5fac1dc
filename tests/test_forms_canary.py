"""The text and person detectors keep proving they see (issue 11): a canary patch after their passes.

A real model made silent (the shipped ONNX with its output multiplied by zero, built here with the
onnx helper) is swapped in while the stage runs: frames are withheld (`canary_missed`, counted, the
reason names the model) from the detector's next pass on, until the healthy model is back. The
healthy models run the same frames without a single canary miss. A model that is silent from the
start is not loaded at all.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from capture.frame import FrameWithheld
from redact import build_stage
from redact.cards import load_card, shipped_card
from redact.config import RedactConfig
from redact.runtime import Session

# detector → (shipped card stem, the output to zero, the policy rule that needs it)
CASES = {"text": ("ppocr_det_fused", "sigmoid_0.tmp_0", 'class = "text"'),
         "person": ("ssdlite_person_cut", "scores", 'class = "person"')}


def silent_copy(stem: str, output: str, out_dir: Path) -> Path:
    """A card + ONNX: the real shipped model whose `output` is multiplied by 0 (well-formed, blind)."""
    card = load_card(shipped_card(stem))
    model = onnx.load(str(card.file))
    raw = f"{output}__raw"
    for node in model.graph.node:
        for k, name in enumerate(node.output):
            if name == output:
                node.output[k] = raw
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), "zero__"))
    model.graph.node.append(helper.make_node("Mul", [raw, "zero__"], [output]))
    path = out_dir / f"{stem}_silent.onnx"
    onnx.save(model, path)
    text = card.card_path.read_text()
    text = text.replace(f'file = "{card.file.name}"', f'file = "{path.name}"')
    text = text.replace(card.sha256, hashlib.sha256(path.read_bytes()).hexdigest())
    out = out_dir / f"{stem}_silent.toml"
    out.write_text(text)
    return out


def frames(n: int) -> list[Any]:
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(640, 480, pace="fast", n_frames=n)
    src.open()
    out = []
    while (f := src.read()) is not None:
        out.append(f)
    return out


def run(stage: Any, fs: list[Any]) -> list[str]:
    """Per frame: "out" or the withheld reason."""
    got = []
    for f in fs:
        try:
            stage.apply(f)
            got.append("out")
        except FrameWithheld as e:
            got.append(e.reason)
    return got


def stage_for(tmp_path: Path, which: str, **over: Any) -> Any:
    pol = tmp_path / "p.toml"
    pol.write_text(f'version = "t"\n[[rules]]\nclass = "face"\n[[rules]]\n{CASES[which][2]}\n')
    stage = build_stage(RedactConfig(policy=str(pol), floor="lowered", budget_ms=5000.0, text_every=3,
                                     person_every=3, **over))
    assert stage.load_error == "", stage.load_error
    return stage


@pytest.mark.parametrize("which", ["text", "person"])
def test_a_detector_that_goes_silent_withholds_frames_until_it_sees_again(tmp_path: Path, which: str) -> None:
    fs = frames(21)
    stage = stage_for(tmp_path, which)
    det = stage.forms.models.get(which)
    healthy = det.session
    assert run(stage, fs[:6]) == ["out"] * 6
    canary = stage.status()["forms"]["canary"]
    # Each of the 2 passes was checked: by the canary, or by finding something sure itself.
    assert canary["runs"].get(which, 0) + canary["proven_by_pass"].get(which, 0) == 2, canary
    assert canary["misses"] == {} and canary["state"].get(which, "ok") == "ok", canary

    det.session = Session(load_card(silent_copy(CASES[which][0], CASES[which][1], tmp_path)), 1)
    got = run(stage, fs[6:15])
    # The next pass is at frame 6 (every 3rd): its canary misses; from then every frame runs a catch-up
    # pass and the canary again, and is withheld.
    assert got == ["canary_missed"] * 9, got
    st = stage.status()
    canary = st["forms"]["canary"]
    assert canary["state"][which] == "failing" and canary["misses"][which] == 9, canary
    assert st["frames_withheld"]["canary_missed"] == 9

    det.session = healthy  # the model sees again: the first frame's catch-up pass finds the canary
    assert run(stage, fs[15:]) == ["out"] * 6
    assert stage.status()["forms"]["canary"]["state"][which] == "ok"


@pytest.mark.parametrize("which", ["text", "person"])
def test_healthy_models_never_miss_their_canary_and_a_silent_one_is_not_loaded(tmp_path: Path, which: str) -> None:
    stage = stage_for(tmp_path, which, forms_canary_every=2)
    assert set(run(stage, frames(24))) == {"out"}
    canary = stage.status()["forms"]["canary"]
    # 8 passes, every 2nd checked (4); the canary itself at least every 2 × 4 passes, whatever they found.
    assert canary["runs"].get(which, 0) + canary["proven_by_pass"].get(which, 0) == 4, canary
    assert canary["runs"][which] >= 1 and canary["misses"] == {}, canary

    # A silent model from the start (redact.text_model / redact.person_model): the load-time proof refuses it.
    card = silent_copy(CASES[which][0], CASES[which][1], tmp_path)
    pol = tmp_path / "p.toml"
    blind = build_stage(RedactConfig(policy=str(pol), floor="lowered", **{f"{which}_model": str(card)}))
    assert "self-test" in blind.load_error or "self-test" in blind.status()["forms"]["load_error"]
    assert set(run(blind, frames(3))) == {"no_model"}
