"""NMS (OpenCV's greedy NMS behind `redact.nms.nms`) keeps exactly what the numpy reference keeps:
on random clusters, on threshold ties, on empty boxes, per class, and on the weak candidates of the
real face models over real faces (the decoders' old and new code paths give the same boxes)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

import redact.decoders.centerface as centerface_decoder
import redact.decoders.retinaface as retinaface_decoder
from capture.hard_faces import hard_case
from capture.synthetic import SyntheticSource
from redact.cards import load_card
from redact.detector import Detector
from redact.nms import nms, nms_reference

MODELS = Path(__file__).resolve().parents[1] / "redact" / "models"


def clusters(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n boxes around k faces (what a detector's anchors give), clipped to a 640×480 frame."""
    c = rng.uniform(0, 640, (k, 2))
    s = rng.uniform(5, 80, k)
    pick = rng.integers(0, k, n)
    cx = c[pick] + rng.normal(0, 3, (n, 2))
    w = s[pick] * rng.uniform(0.7, 1.3, n)
    h = w * rng.uniform(0.8, 1.3, n)
    b = np.stack([cx[:, 0] - w / 2, cx[:, 1] - h / 2, cx[:, 0] + w / 2, cx[:, 1] + h / 2], 1)
    return np.clip(b, 0, [640, 480, 640, 480])


@pytest.mark.parametrize("seed", range(4))
def test_same_kept_boxes_as_the_reference_on_random_clusters(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for trial in range(150):
        boxes = clusters(rng, int(rng.integers(1, 1024)), int(rng.integers(1, 40)))
        if trial % 3 == 0:
            boxes = np.round(boxes)  # integer boxes: IoUs exactly at the threshold happen
        levels = 10 if trial % 2 else 100000  # few score levels: many exact ties
        scores = rng.choice(np.linspace(0.04, 1.0, levels), len(boxes)).astype(np.float32)
        classes = rng.integers(0, 3, len(boxes)) if trial % 4 == 0 else None
        thr = (0.3, 0.4, 0.5)[trial % 3]
        np.testing.assert_array_equal(nms(boxes, scores, thr, classes), nms_reference(boxes, scores, thr, classes))


def test_ties_empty_boxes_and_limits_by_hand() -> None:
    # IoU exactly at the threshold suppresses (≥), as the reference: 100/200 = 0.5, 30/100 = 0.3
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 20]], float)
    assert list(nms(a, np.array([0.9, 0.8]), 0.5)) == [0]
    assert list(nms(a, np.array([0.9, 0.8]), 0.5000001)) == [0, 1]
    b = np.array([[0, 0, 10, 10], [0, 0, 3, 10]], float)
    assert list(nms(b, np.array([0.9, 0.8]), 0.3)) == [0]
    # equal scores: the lower index wins
    assert list(nms(a, np.array([0.7, 0.7]), 0.5)) == [0]
    assert list(nms(a[::-1], np.array([0.7, 0.7]), 0.5)) == [0]
    # empty boxes (clipped away at an edge) and score 0 are kept and suppress nothing, as in the reference
    e = np.array([[5, 5, 5, 9], [5, 5, 5, 9], [0, 0, 10, 10], [640, 0, 640, 0]], float)
    s = np.array([0.9, 0.8, 0.0, 0.5])
    assert list(nms(e, s, 0.3)) == list(nms_reference(e, s, 0.3)) == [0, 1, 3, 2]
    with pytest.raises(ValueError, match="1025 boxes"):
        nms(np.zeros((1025, 4)), np.zeros(1025), 0.3)


def real_frames() -> dict[str, np.ndarray]:
    src = SyntheticSource(640, 480, pace="fast", seed=0, n_frames=2)
    src.open()
    frames = [src.read()]
    out = {case: hard_case(case, frames, 0)[0][0].color for case in ("crowd", "small_10_40", "tilted")}
    import skimage.data

    out["astronaut"] = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    return out


@pytest.mark.parametrize("card", ["retinaface-int8", "retinaface", "centerface"])
def test_decoders_give_the_same_boxes_with_the_reference_nms(card: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The weak-candidate pass (threshold 0.04: hundreds of candidates in a crowd) of each real face
    model on real faces: the same boxes through the new NMS and the old one."""
    det = Detector(load_card(MODELS / f"{card}.toml"), threads=1)
    run_options = ort.RunOptions()
    inp = det.card.input
    mean = inp.mean if isinstance(inp.mean, tuple) else (inp.mean,) * 3
    most = 0
    for name, img in real_frames().items():
        m = inp.multiple
        img = cv2.copyMakeBorder(img, 0, -img.shape[0] % m, 0, -img.shape[1] % m, cv2.BORDER_CONSTANT, value=0)
        outs = det.session.run(cv2.dnn.blobFromImage(img, inp.scale, mean=mean, swapRB=inp.channels == "rgb"),
                               run_options)
        size = (img.shape[1], img.shape[0])
        for thr in (0.04, 0.2, 0.5):
            new = det.decoder.decode(outs, size, thr)
            with monkeypatch.context() as mp:
                mp.setattr(retinaface_decoder, "nms", nms_reference)
                mp.setattr(centerface_decoder, "nms", nms_reference)
                old = det.decoder.decode(outs, size, thr)
            np.testing.assert_array_equal(new, old, err_msg=f"{card} on {name} at {thr}")
            most = max(most, len(new))
    assert most >= 20  # the crowd: the comparison saw many faces, not empty outputs
