"""The person detector without its TensorFlow map loops (redact/models/ssdlite_person_cut.onnx, made by
redact/models/tools/cut_ssdlite.py; decoder `ssd_raw`: NMS in OpenCV) finds exactly what the converted
graph finds — on synthetic frames, on a real photo (scikit-image's astronaut), and at a low threshold
(many overlapping candidates for the NMS) — and has no Loop left."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from redact.cards import load_card, shipped_card
from redact.detector import Detector


def test_the_cut_graph_has_no_loop_and_its_card_names_the_tool() -> None:
    card = load_card(shipped_card("ssdlite_person_cut"))
    assert card.decoder == "ssd_raw" and card.license == "MIT"
    assert not [n for n in onnx.load(str(card.file)).graph.node if n.op_type == "Loop"]
    assert "cut_ssdlite.py" in card.card_path.read_text()
    assert (card.card_path.parent / "tools" / "cut_ssdlite.py").is_file()


@pytest.mark.parametrize("threshold", [None, 0.05])
def test_cut_and_converted_graphs_find_the_same_people(threshold: float | None) -> None:
    import cv2
    import skimage.data

    from capture.synthetic import SyntheticSource

    src = SyntheticSource(640, 480, pace="fast", n_frames=24)
    src.open()
    images = [f.color for f in iter(src.read, None)][::3]
    photo = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
    images += [photo, cv2.resize(photo, (256, 256)), np.ascontiguousarray(photo[:, ::-1])]
    old = Detector(load_card(shipped_card("ssdlite_person")), 1)
    new = Detector(load_card(shipped_card("ssdlite_person_cut")), 1)
    opts = ort.RunOptions()
    found = 0
    for img in images:
        h, w = img.shape[:2]
        a = old.run(img, old.plan(w, h, (w, h), (0, 0))[0], opts, threshold)
        b = new.run(img, new.plan(w, h, (w, h), (0, 0))[0], opts, threshold)
        assert len(a) == len(b)
        a, b = a[np.lexsort(a[:, :5].T)], b[np.lexsort(b[:, :5].T)]
        np.testing.assert_allclose(b[:, :5], a[:, :5], atol=1e-3)
        found += len(a)
    assert found >= 3  # the case is there: people were found
