"""Private objects by example: registration through the real CLI, matching on held-out synthetic views
(new pose, scale, lighting), quad redaction in colour and depth, and offline `crowdcap redact --state-dir`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from capture.frame import RGBDFrame
from capture.scene_private import exemplar, object_view
from capture.synthetic import SyntheticSource
from device.cli import main
from redact.private.config import PrivacyConfig
from redact.private.layer import PrivateLayer

REGISTERED = "family-photo"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    for name in ("family-photo", "coffee-poster", "rocket"):
        cv2.imwrite(str(d / f"{name}.png"), exemplar(name))
    cv2.imwrite(str(d / "plain.png"), np.full((200, 300, 3), 128, np.uint8))
    return d


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_add_list_remove_through_cli(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert main(["privacy", "--state-dir", str(state), "--json", "add-object", REGISTERED,
                 str(photos / "family-photo.png")]) == 0
    added = _json(capsys)
    assert added["name"] == REGISTERED and len(added["name_hash"]) == 16 and added["images"] == 1
    assert main(["privacy", "--state-dir", str(state), "--json", "list"]) == 0
    listed = _json(capsys)
    assert [o["name"] for o in listed["objects"]] == [REGISTERED] and listed["volumes"] == []
    # a second registration under the same name, a plain image, a missing file: clear errors, exit 2
    assert main(["privacy", "--state-dir", str(state), "add-object", REGISTERED, str(photos / "rocket.png")]) == 2
    assert "already registered" in capsys.readouterr().err
    assert main(["privacy", "--state-dir", str(state), "add-object", "wall", str(photos / "plain.png")]) == 2
    assert "too plain" in capsys.readouterr().err
    assert main(["privacy", "--state-dir", str(state), "add-object", "x", str(tmp_path / "nope.png")]) == 2
    assert "cannot read the image" in capsys.readouterr().err
    assert main(["privacy", "--state-dir", str(state), "add-object", "../evil", str(photos / "rocket.png")]) == 2
    assert "name" in capsys.readouterr().err
    assert main(["privacy", "--state-dir", str(state), "--json", "remove", REGISTERED]) == 0
    assert _json(capsys)["removed"] == ["object"]
    assert main(["privacy", "--state-dir", str(state), "remove", REGISTERED]) == 2


@pytest.mark.slow
def test_held_out_views_are_found_and_their_quad_redacted(photos: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert main(["privacy", "--state-dir", str(state), "add-object", REGISTERED, str(photos / "family-photo.png")]) == 0
    layer = PrivateLayer.load(state, PrivacyConfig(object_hold_frames=0))
    src = SyntheticSource(pace="fast")
    rng = np.random.default_rng(7)
    found = views = false_hits = 0
    for i in range(24):
        background, depth, _ = src.render(i * 11)
        name = REGISTERED if i % 3 else "rocket"  # every third view shows an unregistered picture
        color, quad = object_view(background, exemplar(name), rng)
        frame = RGBDFrame("d", "s", i, i, 1.0, color, depth, 1000.0, src.intrinsics)
        out_c, out_d, regions = layer.apply(frame, frame.color, frame.depth)
        assert frame.color is color and np.array_equal(frame.color, color)  # the source's buffer is untouched
        if name != REGISTERED:
            false_hits += len(regions)
            continue
        views += 1
        if not regions:
            continue
        found += 1
        r = regions[0]
        assert r["class"] == "private_object" and r["name_hash"] == layer.objects.objects[0].name_hash
        assert "family" not in json.dumps(regions)  # the name never leaves, only its hash
        truth = np.zeros(depth.shape, np.uint8)
        cv2.fillConvexPoly(truth, np.round(quad).astype(np.int32), 1)
        inner = cv2.erode(truth, np.ones((7, 7), np.uint8)).view(bool)  # the outline ± a few pixels
        assert (out_c[inner] == 0).all() and (out_d[inner] == 0).all()
        far = cv2.dilate(truth, np.ones((61, 61), np.uint8)) == 0
        assert np.array_equal(out_c[far], color[far])  # a quad, not the whole frame
    assert false_hits == 0
    assert found / views >= 0.7, f"recall {found}/{views}"


@pytest.mark.slow
def test_offline_redact_applies_the_state_dir(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert main(["privacy", "--state-dir", str(state), "add-object", REGISTERED, str(photos / "family-photo.png")]) == 0
    background, _, _ = SyntheticSource(pace="fast").render(3)
    img, quad = object_view(background, exemplar(REGISTERED), np.random.default_rng(3))
    cv2.imwrite(str(tmp_path / "shot.png"), img)
    capsys.readouterr()
    assert main(["redact", str(tmp_path / "shot.png"), "--out", str(tmp_path / "out"), "--json",
                 "--state-dir", str(state)]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "private_object" in [r["class"] for r in row["regions"]]
    out = cv2.imread(str(tmp_path / "out" / "shot.png"))
    cx, cy = np.round(quad.mean(0)).astype(int)
    assert (out[cy - 3:cy + 3, cx - 3:cx + 3] == 0).all()
    # without --state-dir the same picture is not redacted: the objects live in the state folder
    assert main(["redact", str(tmp_path / "shot.png"), "--out", str(tmp_path / "out2"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "private_object" not in [r["class"] for r in row["regions"]]


def test_interval_matches_every_nth_frame_and_holds_in_between() -> None:
    """`privacy.object_interval`: a matching pass every 3rd frame; the frames between get the last
    match moved and grown (manifest source "propagated"), never nothing while the object is held."""
    layer_cfg = PrivacyConfig(object_interval=3, object_hold_frames=0)
    from redact.private.objects import ObjectMatcher, PrivateObject

    matcher = ObjectMatcher([PrivateObject(REGISTERED, "both", [exemplar(REGISTERED)])], "sift",
                            hold_frames=layer_cfg.object_interval - 1, interval=layer_cfg.object_interval)
    background, _, _ = SyntheticSource(pace="fast").render(5)
    img, quad = object_view(background, exemplar(REGISTERED), np.random.default_rng(11))
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    held = []
    for _ in range(7):
        hits = matcher.match(gray)
        assert len(hits) == 1
        held.append(hits[0].held)
    assert matcher.passes == 3 and held == [0, 1, 2, 0, 1, 2, 0]
