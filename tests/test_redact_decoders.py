"""Decoders are exact on handmade ONNX graphs run by onnxruntime; NMS and IoU by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from redact.cards import load_card
from redact.decoders import ModelGarbage
from redact.detector import Deadline, Detector, Pass, tile_origins
from redact.nms import iou_matrix, nms
from redact.testing import centerface_outputs, write_constant


def run_once(card: Path, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    det = Detector(load_card(card), threads=1)
    img = np.zeros((size[1], size[0], 3), np.uint8)
    with Deadline(5.0) as dl:
        return det.run(img, Pass(0, 0, size[0], size[1], 1.0), dl.options)


def test_centerface_decoder_exact(tmp_path: Path) -> None:
    cells = [
        (2, 3, 0.9, 8, 6, 0.0, 0.0),     # centre (14, 10): box [11, 6, 17, 14]
        (2, 4, 0.8, 8, 6, 0.0, -0.5),    # centre (16, 10): IoU 0.5 with the first -> suppressed
        (6, 6, 0.5, 4, 4, 0.25, 0.25),   # centre (27, 27): box [25, 25, 29, 29]
        (0, 0, 0.1, 4, 4, 0.0, 0.0),     # below the 0.2 threshold
        (7, 0, 0.3, 8, 40, 0.0, 0.0),    # clipped to the input: x1 = 0, y2 = 32
    ]
    card = write_constant(tmp_path, "cf", centerface_outputs((32, 32), cells), "centerface", ["face"])
    got = run_once(card)
    # cell (7, 0): centre (2, 30), w 40, h 8 -> x1 = max(0, -18) = 0, x2 = min(0 + 40, 32), y2 = min(34, 32)
    want = np.array([[11, 6, 17, 14, 0.9, 0], [25, 25, 29, 29, 0.5, 0], [0, 26, 32, 32, 0.3, 0]], np.float32)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_centerface_boxes_map_back_to_frame_pixels(tmp_path: Path) -> None:
    """A downscaled pass (scale 0.5 of a 64×64 frame) maps boxes back to frame pixels."""
    card = write_constant(tmp_path, "cf", centerface_outputs((32, 32), [(2, 3, 0.9, 8, 6, 0, 0)]),
                          "centerface", ["face"])
    det = Detector(load_card(card), threads=1)
    with Deadline(5.0) as dl:
        got = det.run(np.zeros((64, 64, 3), np.uint8), Pass(0, 0, 64, 64, 0.5), dl.options)
    np.testing.assert_allclose(got[:, :4], [[22, 12, 34, 28]], atol=1e-4)
    with Deadline(5.0) as dl:  # a full-resolution tile at (100, 50)
        got = det.run(np.zeros((200, 200, 3), np.uint8), Pass(100, 50, 32, 32, 1.0), dl.options)
    np.testing.assert_allclose(got[:, :4], [[111, 56, 117, 64]], atol=1e-4)


@pytest.mark.parametrize("layout", ["yolov5", "yolov8"])
def test_yolo_decoder_exact(tmp_path: Path, layout: str) -> None:
    # rows: cx, cy, w, h, obj, p(face), p(plate)
    rows = np.array([
        [10, 10, 8, 8, 0.9, 0.9, 0.1],    # face 0.81, box [6, 6, 14, 14]
        [11, 10, 8, 8, 0.9, 0.8, 0.1],    # face 0.72, IoU 0.78 with the first -> suppressed
        [11, 10, 8, 8, 0.9, 0.1, 0.7],    # plate 0.63: other class, kept
        [28, 28, 12, 12, 1.0, 0.2, 0.1],  # face 0.2 < 0.25 -> dropped
        [30, 2, 8, 8, 1.0, 0.5, 0.0],     # face 0.5, clipped to [26, 0, 32, 6]
    ], np.float32)
    if layout == "yolov5":
        out = rows[None]
    else:
        out = np.concatenate([rows[:, :4], rows[:, 5:] * rows[:, 4:5]], axis=1).T[None]
    card = write_constant(tmp_path, "yolo", {"out": out}, "yolo", ["face", "plate"], {"layout": layout})
    got = run_once(card)
    want = np.array([[6, 6, 14, 14, 0.81, 0], [7, 6, 15, 14, 0.63, 1], [26, 0, 32, 6, 0.5, 0]], np.float32)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_fixed_size_model_gets_the_whole_frame_resized(tmp_path: Path) -> None:
    rows = np.array([[10, 10, 8, 8, 0.9, 0.9]], np.float32)  # box [6, 6, 14, 14] in a 32×32 input
    card = write_constant(tmp_path, "fixed", {"out": rows[None]}, "yolo", ["plate"], input_size="[32, 32]")
    det = Detector(load_card(card), threads=1)
    whole, tiles = det.plan(64, 128, (384, 288), (384, 288))
    assert tiles == [] and whole.scale == 0.0
    with Deadline(5.0) as dl:
        got = det.run(np.zeros((128, 64, 3), np.uint8), whole, dl.options)
    np.testing.assert_allclose(got[:, :4], [[12, 24, 28, 56]], atol=1e-4)  # x ×2, y ×4


def test_garbage_outputs_are_rejected(tmp_path: Path) -> None:
    outs = centerface_outputs((32, 32), [(2, 3, 0.9, 8, 6, 0, 0)])
    outs["537"][0, 0, 5, 5] = np.nan
    with pytest.raises(ModelGarbage, match="NaN"):
        run_once(write_constant(tmp_path, "nan", outs, "centerface", ["face"]))
    outs = centerface_outputs((32, 32), [(2, 3, 0.9, 8, 6, 0, 0)])
    outs["537"] = outs["537"][:, :, :5, :5]
    with pytest.raises(ModelGarbage, match="shape"):
        run_once(write_constant(tmp_path, "shape", outs, "centerface", ["face"]))
    with pytest.raises(ModelGarbage, match=r"\(1, N, 6\)"):
        run_once(write_constant(tmp_path, "y", {"out": np.zeros((1, 3, 7), np.float32)}, "yolo", ["face"]))
    outs = centerface_outputs((32, 32), [(2, 3, 0.9, 8, 6, 0, 0)])
    del outs["538"]
    with pytest.raises(ModelGarbage, match="no output '538'"):
        run_once(write_constant(tmp_path, "missing", outs, "centerface", ["face"]))


def test_nms_and_iou_by_hand() -> None:
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    iou = iou_matrix(a, a)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0 and iou[2, 2] == 1
    scores = np.array([0.5, 0.9, 0.7])
    assert list(nms(a, scores, 0.3)) == [1, 2]           # 0 overlaps 1 by 1/3 >= 0.3
    assert list(nms(a, scores, 0.4)) == [1, 2, 0]
    assert list(nms(a, scores, 0.3, classes=np.array([0, 1, 0]))) == [1, 2, 0]
    assert len(nms(np.zeros((0, 4)), np.zeros(0), 0.3)) == 0


def test_tiles_cover_the_frame_with_overlap() -> None:
    assert tile_origins(640, 384) == [0, 256]
    assert tile_origins(480, 288) == [0, 192]
    assert tile_origins(200, 384) == [0]
    starts = tile_origins(1920, 384)
    assert starts[0] == 0 and starts[-1] == 1920 - 384
    assert all(b - a <= 384 - 96 for a, b in zip(starts, starts[1:], strict=False))


def test_verify_mosaic_maps_back_to_frame_pixels(tmp_path: Path) -> None:
    """One weak candidate → a 96×96 mosaic (64 px crop at offset 16); a box found there maps back."""
    # Mosaic box centre (46, 46), 8×8 -> [42, 42, 50, 50]; crop origin (73, 73) -> +57 in the frame.
    card = write_constant(tmp_path, "cf", centerface_outputs((96, 96), [(11, 11, 0.9, 8, 8, 0, 0)]),
                          "centerface", ["face"])
    det = Detector(load_card(card), threads=1)
    cand = np.array([[100, 100, 110, 110, 0.05, 0]], np.float32)
    with Deadline(5.0) as dl:
        got = det.verify(np.zeros((200, 200, 3), np.uint8), cand, dl.options)
    np.testing.assert_allclose(got, [[99, 99, 107, 107, 0.9, 0]], atol=1e-5)
    with Deadline(5.0) as dl:  # nothing to check -> no run at all
        assert len(det.verify(np.zeros((200, 200, 3), np.uint8), cand[:0], dl.options)) == 0


def test_verify_mosaic_without_gaps_maps_each_box_to_its_own_crop(tmp_path: Path) -> None:
    """gap 0 (the built-in path's `verify_gap`): two crops side by side on a 128×64 mosaic; a box in the
    second crop maps back to the second candidate, clipped to that crop."""
    # Mosaic box centre (98, 34), 8×8 -> [94, 30, 102, 38]; the 2nd crop sits at mosaic x 64, frame (123, 73).
    card = write_constant(tmp_path, "cf0", centerface_outputs((128, 64), [(8, 24, 0.9, 8, 8, 0, 0)]),
                          "centerface", ["face"])
    det = Detector(load_card(card), threads=1)
    cand = np.array([[20, 20, 30, 30, 0.05, 0], [150, 100, 160, 110, 0.05, 0]], np.float32)
    with Deadline(5.0) as dl:
        got = det.verify(np.zeros((200, 200, 3), np.uint8), cand, dl.options, gap=0)
    np.testing.assert_allclose(got, [[153, 103, 161, 111, 0.9, 0]], atol=1e-5)


def test_too_many_candidates_refused_not_truncated(tmp_path: Path) -> None:
    """A threshold below the whole heatmap (or a noise output) must not make NMS drop the weakest
    boxes silently, nor build a gigabyte IoU matrix: the pass is refused (the stage withholds)."""
    outs = centerface_outputs((256, 256), [], fill=0.5)  # 64×64 = 4096 cells above 0.2
    with pytest.raises(ModelGarbage, match="4096 candidates above score 0.2"):
        run_once(write_constant(tmp_path, "noise", outs, "centerface", ["face"]), size=(256, 256))
    rows = np.tile(np.array([[10, 10, 8, 8, 0.9, 0.9]], np.float32), (2000, 1))
    with pytest.raises(ModelGarbage, match="2000 candidates"):
        run_once(write_constant(tmp_path, "y", {"out": rows[None]}, "yolo", ["face"]))
    boxes = np.tile(np.array([[0, 0, 10, 10]], float), (11, 1))
    with pytest.raises(ValueError, match="11 boxes"):
        nms(boxes, np.linspace(0, 1, 11), 0.3, max_candidates=10)
