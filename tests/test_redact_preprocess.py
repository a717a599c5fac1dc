"""The detector's input tensor (redact.detector.to_blob) is exactly cv2.dnn.blobFromImage's, for every
shipped card's input spec and for odd sizes, on a real photo and on noise."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from redact.cards import InputSpec, load_card
from redact.detector import to_blob

MODELS = Path(__file__).resolve().parents[1] / "redact" / "models"
SPECS = [load_card(p).input for p in sorted(MODELS.glob("*.toml"))] + [
    InputSpec(channels="rgb", mean=(123.675, 116.28, 103.53), scale=0.017),
    InputSpec(channels="bgr", mean=127.5, scale=1 / 127.5)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.channels}-{s.mean}-{s.scale:.3g}")
def test_same_tensor_as_blob_from_image(spec: InputSpec) -> None:
    import skimage.data

    rng = np.random.default_rng(0)
    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    images = [photo, photo[100:388, 7:391], cv2.resize(photo, (640, 480))]  # a view, not contiguous
    images += [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((1, 1), (1, 2), (3, 1), (33, 17))]
    mean = spec.mean if isinstance(spec.mean, tuple) else (spec.mean,) * 3
    for img in images:
        want = cv2.dnn.blobFromImage(img, scalefactor=spec.scale, mean=mean, swapRB=spec.channels == "rgb")
        got = to_blob(img, spec)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
