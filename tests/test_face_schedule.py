"""The face schedule's hold: what only a full-resolution tile sees (every few frames) stays covered
on the frames between, by the tracker's hold with its growing margin. Real RetinaFace int8 model."""

from __future__ import annotations

import cv2
import numpy as np

from capture.frame import Intrinsics, RGBDFrame
from redact import build_stage
from redact.config import RedactConfig
from tests.test_redact_stage import ASTRONAUT, BUDGET_MS, FACE_IN_PHOTO, coverage

FACE_PX = 11  # too small for the 320-wide whole-frame pass (5 px there), seen by a full-resolution tile
X, Y = 100, 90  # inside the first tile (384×288 at the origin)


def far_face_frame(seq: int) -> tuple[RGBDFrame, tuple[float, ...]]:
    rng = np.random.default_rng(7)
    color = cv2.GaussianBlur(rng.integers(40, 200, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    s = FACE_PX / (FACE_IN_PHOTO[2] - FACE_IN_PHOTO[0])
    size = round(512 * s)
    color[Y:Y + size, X:X + size] = cv2.resize(ASTRONAUT, (size, size), interpolation=cv2.INTER_AREA)
    face = (X + FACE_IN_PHOTO[0] * s, Y + FACE_IN_PHOTO[1] * s, X + FACE_IN_PHOTO[2] * s, Y + FACE_IN_PHOTO[3] * s)
    depth = np.full((480, 640), 1500, np.uint16)
    return RGBDFrame("d", "s", seq, 0, 0.0, color, depth, 1000.0,
                     Intrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)), face


def covered_per_frame(**overrides: float) -> list[bool]:
    # Whole frame at 320×240 every frame; one full-resolution 384×288 tile every 4th frame (4 tiles:
    # each place at full resolution every 16 frames); no re-check of candidates, no second model.
    cfg = RedactConfig(budget_ms=BUDGET_MS, detect_width=320, detect_height=256, tile_width=384, tile_height=288,
                       tiles_per_frame=0.25, verify_candidates=0, verify_model_every=0, **overrides)
    stage = build_stage(cfg)
    assert stage.load_error == ""
    out = []
    tiles = 0
    for k in range(24):
        frame, face = far_face_frame(k)
        manifest = stage.apply(frame).redaction
        passes = manifest["passes"]["retinaface-int8"]
        assert passes["whole"] == [320, 240], passes  # every frame: the whole frame, downscaled
        tiles += passes["tiles"]
        out.append(coverage(face, manifest["regions"], (480, 640)) >= 0.7)
    assert tiles == 6  # 0.25 per frame: the manifest says which frames had a full-resolution tile
    return out


def test_face_seen_only_by_a_tile_is_held_until_the_tile_comes_back() -> None:
    held = covered_per_frame(hold_frames=20)
    first = held.index(True)  # the tile over the face ran (within the first full rotation)
    assert first < 16, held
    assert all(held[first:]), held  # every frame after: held between the tile's visits
    blind = covered_per_frame(hold_frames=0)
    assert not all(blind[first:]), blind  # without the hold the frames between leak: the test has teeth
