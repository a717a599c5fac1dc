"""RetinaFace decoder and card: anchors, decoding arithmetic, garbage refused, per-channel mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from redact.cards import CardError, load_card
from redact.decoders import ModelGarbage, make_decoder
from redact.decoders.retinaface import anchors

CARD = Path(__file__).resolve().parents[1] / "redact" / "models" / "retinaface.toml"


def outputs(n: int, hits: dict[int, tuple[float, list[float]]]) -> dict[str, np.ndarray]:
    loc = np.zeros((1, n, 4), np.float32)
    conf = np.zeros((1, n, 2), np.float32)
    conf[0, :, 0] = 1.0
    for i, (score, d) in hits.items():
        conf[0, i] = 1 - score, score
        loc[0, i] = d
    return {"loc": loc, "conf": conf, "landmarks": np.zeros((1, n, 10), np.float32)}


def test_anchor_layout_matches_the_model() -> None:
    a = anchors(64, 32)
    # stride 8: 8×4 cells × 2 sizes, stride 16: 4×2 × 2, stride 32: 2×1 × 2
    assert len(a) == 64 + 16 + 4
    assert a[0].tolist() == [4, 4, 16, 16] and a[1].tolist() == [4, 4, 32, 32] and a[2].tolist() == [12, 4, 16, 16]
    assert a[64].tolist() == [8, 8, 64, 64] and a[-1].tolist() == [48, 16, 512, 512]


def test_decode_boxes_from_anchor_offsets() -> None:
    card = load_card(CARD)
    dec = make_decoder(card)
    n = len(anchors(64, 32))
    # anchor 1 = centre (4, 4), 32 px: shift by +1 (×0.1×32 = 3.2 px) in x, size × e^(0.2·ln 2 / 0.2) = ×2 in w
    d = dec.decode(outputs(n, {1: (0.9, [1.0, 0.0, np.log(2) / 0.2, 0.0])}), (64, 32))
    assert d.shape == (1, 6)
    x1, y1, x2, y2, score, cls = d[0]
    assert score == pytest.approx(0.9) and cls == 0
    assert (x1 + x2) / 2 == pytest.approx(7.2, abs=0.01) or x1 == 0  # clipped at the left edge
    s = 1.15  # the card's box_scale
    assert y2 == pytest.approx(4 + 16 * s, abs=0.01) and x2 == pytest.approx(7.2 + 32 * s, abs=0.01)
    assert len(dec.decode(outputs(n, {1: (0.3, [0, 0, 0, 0])}), (64, 32))) == 0  # below the card's 0.5
    assert len(dec.decode(outputs(n, {1: (0.3, [0, 0, 0, 0])}), (64, 32), threshold=0.2)) == 1


def test_garbage_is_refused() -> None:
    dec = make_decoder(load_card(CARD))
    n = len(anchors(64, 32))
    with pytest.raises(ModelGarbage, match="shape"):
        dec.decode(outputs(n - 1, {}), (64, 32))
    bad = outputs(n, {})
    bad["conf"][0, 3, 1] = np.nan
    with pytest.raises(ModelGarbage, match="NaN"):
        dec.decode(bad, (64, 32))
    big = len(anchors(320, 256))
    noise = outputs(big, {})
    noise["conf"][0, :, 1] = 0.9  # every anchor a face at the card's threshold: noise, refused
    with pytest.raises(ModelGarbage, match="candidates"):
        dec.decode(noise, (320, 256))
    # a weak-candidate pass (below the card's threshold) keeps the best instead of refusing
    weak = outputs(big, {})
    weak["conf"][0, :, 1] = np.linspace(0.05, 0.3, big)
    assert 0 < len(dec.decode(weak, (320, 256), threshold=0.04)) <= 1024


def test_card_mean_per_channel(tmp_path: Path) -> None:
    card = load_card(CARD)
    assert card.input.mean == (104.0, 117.0, 127.0) and card.input.channels == "bgr"
    bad = tmp_path / "bad.toml"
    bad.write_text(CARD.read_text().replace("mean = [104, 117, 127]", "mean = [104, 117]")
                   .replace('file = "retinaface_mnet025.onnx"', f'file = "{CARD.parent}/retinaface_mnet025.onnx"'))
    with pytest.raises(CardError, match=r"input.mean: expected a number or a list of 3 numbers"):
        load_card(bad)
