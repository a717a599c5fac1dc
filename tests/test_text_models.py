"""PP-OCR and SSD decoders on handmade outputs (refusing garbage), the real models on real and
synthetic images, and the screen finder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from redact.cards import load_card, shipped_card
from redact.decoders import ModelGarbage
from redact.decoders.ppocr import CTCTextDecoder, DBTextDecoder
from redact.decoders.ssd import SSDDecoder
from redact.nms import iou_matrix


def test_db_decoder_boxes_regions_and_refuses_garbage() -> None:
    dec = DBTextDecoder(load_card(shipped_card("ppocr_det")))
    prob = np.zeros((1, 1, 64, 96), np.float32)
    prob[0, 0, 10:20, 10:60] = 0.9  # a line
    prob[0, 0, 40:50, 30:40] = 0.4  # a weak blob: mean below box threshold 0.5
    boxes = dec.decode({"sigmoid_0.tmp_0": prob}, (96, 64))
    assert len(boxes) == 1
    x1, y1, x2, y2, score, cls = boxes[0]
    assert x1 < 10 and y1 < 10 and x2 > 60 and y2 > 20 and score == pytest.approx(0.9, abs=0.02) and cls == 0
    assert x2 - x1 < 75 and y2 - y1 < 30  # grown by unclip (area*1.6/perimeter ≈ 6.5 px), not more
    with pytest.raises(ModelGarbage, match="shape"):
        dec.decode({"sigmoid_0.tmp_0": prob}, (64, 96))
    prob[0, 0, 0, 0] = np.nan
    with pytest.raises(ModelGarbage, match="NaN"):
        dec.decode({"sigmoid_0.tmp_0": prob}, (96, 64))
    with pytest.raises(ModelGarbage, match="no output"):
        dec.decode({}, (96, 64))


def test_ctc_decoder_collapses_repeats_and_drops_blanks() -> None:
    dec = CTCTextDecoder(load_card(shipped_card("ppocr_rec")), ["1", "0", "4", "7"])
    seq = [1, 1, 0, 2, 0, 3, 3, 0, 4, 5, 0]  # 1 1 _ 0 _ 4 4 _ 7 ' ' _
    probs = np.full((1, len(seq), 6), 0.01, np.float32)
    probs[0, np.arange(len(seq)), seq] = 0.95
    assert dec.decode_strings(probs)[0][0] == "1047 "
    with pytest.raises(ModelGarbage):
        dec.decode_strings(np.zeros((1, 4, 5), np.float32))


def test_ssd_decoder_scales_boxes_and_keeps_the_person_label() -> None:
    dec = SSDDecoder(load_card(shipped_card("ssdlite_person")))
    outs = {"detection_boxes:0": np.array([[[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1], [0, 0, 0.5, 0.5]]], np.float32),
            "detection_scores:0": np.array([[0.9, 0.1, 0.8]], np.float32),
            "detection_classes:0": np.array([[1, 1, 2]], np.float32),
            "num_detections:0": np.array([3], np.float32)}
    got = dec.decode(outs, (300, 300))
    np.testing.assert_allclose(got, [[60, 30, 180, 150, 0.9, 0]], atol=1e-4)
    outs["detection_scores:0"][0, 0] = np.inf
    with pytest.raises(ModelGarbage):
        dec.decode(outs, (300, 300))


@pytest.fixture(scope="module")
def models():  # noqa: ANN201
    from redact.config import RedactConfig
    from redact.schedule import Models

    return Models(RedactConfig())


def test_real_text_models_read_a_real_page(models) -> None:  # noqa: ANN001
    import onnxruntime as ort
    import skimage.data

    page = cv2.cvtColor(skimage.data.page(), cv2.COLOR_GRAY2BGR)
    det = models.get("text")
    boxes = det.run(page, det.plan(384, 191, (384, 192), (0, 0))[0], ort.RunOptions())
    assert len(boxes) >= 5
    strings = [s for s, _ in models.get("rec").read(page, boxes, ort.RunOptions())]
    assert "Region-based segmentation" in strings


def test_screen_finder_on_the_synthetic_scene(models) -> None:  # noqa: ANN001
    import onnxruntime as ort

    from capture.synthetic import SyntheticSource
    from redact.screens import find_screens

    src = SyntheticSource(640, 480, pace="fast")
    found = 0
    for i in (0, 100):
        color, _, truth = src.render(i)
        det = models.get("text")
        text = det.run(color, det.plan(640, 480, (480, 352), (0, 0))[0], ort.RunOptions())
        screens = find_screens(color, text)
        want = np.array(truth["private"]["screen"], float)
        assert len(screens) == 1, screens  # the monitor; not the bib, the plates or the signs
        found += int(iou_matrix(screens[:, :4], want).max() > 0.8)
    assert found == 2


@pytest.mark.parametrize("dark", [True, False], ids=["dark-mode", "lit"])
def test_screen_finder_finds_dark_mode_screens_pasted_in_perspective(models, dark: bool) -> None:  # noqa: ANN001
    """A screen showing light text on a dark panel (dark mode) or dark text on a lit one, pasted at a
    random place, size and slant into synthetic frames: found (≥ 70 % of the panel covered)."""
    import onnxruntime as ort

    from capture.scene_text import screen_stills
    from capture.synthetic import SyntheticSource
    from redact.screens import find_screens

    src = SyntheticSource(640, 480, pace="fast")
    frames = [src.render(i)[0] for i in range(0, 120, 12)]
    det = models.get("text")
    hit = 0
    for img, (x1, y1, x2, y2) in screen_stills(frames, dark, seed=1):
        text = det.run(img, det.plan(640, 480, (512, 384), (0, 0))[0], ort.RunOptions())
        m = np.zeros((480, 640), bool)
        for b in find_screens(img, text):
            m[int(b[1]):int(np.ceil(b[3])), int(b[0]):int(np.ceil(b[2]))] = True
        hit += m[y1:y2, x1:x2].mean() >= 0.7
    assert hit >= (9 if dark else 9), hit  # lit: 7 before lit panels touching other bright things were grown


def test_fused_text_models_compute_what_the_shipped_ones_do() -> None:
    """ppocr_det_fused / ppocr_rec_fused (models/tools/fuse_ppocr_det.py) against the files as shipped
    in rapidocr, on a real photo: the same probability map (to 1e-3), the same strings read."""
    import onnxruntime as ort
    import skimage.data

    from redact.cards import load_card, shipped_card
    from redact.detector import Detector
    from redact.recognizer import TextRecognizer

    page = cv2.cvtColor(skimage.data.page(), cv2.COLOR_GRAY2BGR)
    opts = ort.RunOptions()
    det, fused = (Detector(load_card(shipped_card(s)), 1) for s in ("ppocr_det", "ppocr_det_fused"))
    p = det.plan(384, 191, (384, 192), (0, 0))[0]
    a, b = det.run(page, p, opts), fused.run(page, p, opts)
    assert len(a) >= 5 and a.shape == b.shape and np.allclose(a, b, atol=0.5)  # boxes to half a pixel
    rec, rec_fused = (TextRecognizer(load_card(shipped_card(s)), 1) for s in ("ppocr_rec", "ppocr_rec_fused"))
    assert [s for s, _ in rec.read(page, a, opts)] == [s for s, _ in rec_fused.read(page, a, opts)]


def test_shipped_models_have_cards_licences_and_tools() -> None:
    models = Path(__file__).parent.parent / "redact" / "models"
    for stem, licence in (("ppocr_det", "LICENSE.ppocr.txt"), ("ppocr_det_fused", "LICENSE.ppocr.txt"),
                          ("ppocr_rec", "LICENSE.ppocr.txt"), ("ppocr_rec_fused", "LICENSE.ppocr.txt"),
                          ("ssdlite_person", "LICENSE.ssdlite_person.txt"),
                          ("ssdlite_person_cut", "LICENSE.ssdlite_person.txt")):
        card = load_card(models / f"{stem}.toml")
        assert card.file.is_file() and card.license and (models / licence).is_file()
    assert "Apache License" in (models / "LICENSE.ppocr.txt").read_text()
    for tool in ("extract_ppocr.sh", "fuse_ppocr_det.py", "convert_ssdlite.sh", "wrap_nchw.py", "same_outputs.py",
                 "cut_ssdlite.py"):
        assert (models / "tools" / tool).is_file()


def test_text_scale_upscales_small_images_only_within_the_detector_size() -> None:
    from redact.config import RedactConfig
    from redact.passes import text_scale

    video = RedactConfig(text_width=512, text_height=384)
    assert text_scale(640, 480, video) == pytest.approx(0.8)  # a video frame: down to the detector size
    still = RedactConfig(text_width=4096, text_height=4096)
    assert text_scale(448, 172, still) == pytest.approx(736 / 172)  # short side up to text_min_side
    assert text_scale(2000, 1500, still) == pytest.approx(1.0)  # large enough: as it is
    assert text_scale(448, 172, RedactConfig(text_width=4096, text_height=4096, text_min_side=0)) == 1.0
    assert text_scale(448, 172, RedactConfig(text_width=896, text_height=4096)) == pytest.approx(2.0)  # capped


def test_real_handwriting_photo_is_found_as_text(tmp_path: Path) -> None:
    """skimage's `text` (handwriting on paper, 448×172): at its native size the detector's
    probability map is zero everywhere; upscaled as the reference does, its lines are found."""
    import skimage.data

    from capture.frame import Intrinsics, RGBDFrame, now_stamps
    from redact import build_stage
    from redact.config import RedactConfig

    p = tmp_path / "p.toml"
    p.write_text('version = "t"\n[[rules]]\nclass = "face"\n[[rules]]\nclass = "text"\naction = "fill"\n')
    gray = skimage.data.text()
    color = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    h, w = color.shape[:2]
    frame = RGBDFrame("t", "s", 0, *now_stamps(), color, np.zeros((h, w), np.uint16), 1000.0,
                      Intrinsics(w, h, 525.0, 525.0, w / 2, h / 2))
    ink = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 25, 15) > 0
    for min_side, expect_found in ((0, False), (736, True)):
        stage = build_stage(RedactConfig(policy=str(p), floor="lowered", budget_ms=10000.0, text_width=4096,
                                         text_height=4096, text_every=1, text_min_side=min_side))
        regions = [r for r in stage.apply(frame).redaction["regions"] if r["class"] == "text"]
        mask = np.zeros((h, w), bool)
        for r in regions:
            x1, y1, x2, y2 = r["bbox"]
            mask[y1:y2, x1:x2] = True
        covered = (ink & mask).sum() / ink.sum()
        assert (covered > 0.5) == expect_found, (min_side, covered, len(regions))
        stage.close()
