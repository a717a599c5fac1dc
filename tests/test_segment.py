"""Person masks (redact/segment.py) with the real shipped segmenter: the card's hash, masks on a real
photo, fallback to the whole box on a faulty model / an implausible mask / a spent budget, policy
validation naming the rule and field, and the stage redacting only the person's pixels (colour and
depth) with `"shape": "mask"` in the manifest and no mask bits in it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from capture.frame import Intrinsics, RGBDFrame
from redact import segment
from redact.cards import load_card, read_verified, shipped_card
from redact.policy import PolicyError, parse_policy

MASK_POLICY = {"version": "m-1", "rules": [{"class": "person", "action": "fill", "shape": "mask", "margin": 0.1}]}


@pytest.fixture(scope="module")
def seg() -> segment.Segmenter:
    return segment.Segmenter(load_card(shipped_card("selfie_segmentation")))


def test_card_pins_the_shipped_onnx_and_models_verify_proves_it() -> None:
    card = load_card(shipped_card("selfie_segmentation"))
    data = read_verified(card)
    assert hashlib.sha256(data).hexdigest() == card.sha256 and len(data) < 1_000_000
    assert card.license == "Apache-2.0" and (card.card_path.parent / "LICENSE.selfie_segmentation.txt").is_file()
    assert segment.prove_segmenter(card) == ""


def test_mask_covers_the_astronauts_face_and_chest_and_spares_part_of_her_box(seg: segment.Segmenter) -> None:
    photo, box, face = segment.astronaut()
    m = seg.mask(photo, box)
    x0, y0 = box[:2]
    assert m.shape == (box[3] - box[1], box[2] - box[0])
    assert m[face[1] - y0:face[3] - y0, face[0] - x0:face[2] - x0].mean() >= 0.99
    assert m[330 - y0:450 - y0, 250 - x0:400 - x0].mean() >= 0.99  # the chest (where the synthetic bib is)
    assert 0.4 <= m.mean() <= 0.93  # part of the flag and the shuttle behind her stay


def test_refine_sets_shape_and_falls_back_to_the_box_when_implausibly_small(seg: segment.Segmenter) -> None:
    photo, box, _ = segment.astronaut()
    policy = parse_policy(MASK_POLICY, "p.toml")
    # A "person" box over the plain sky above the shuttle: nothing there is a person.
    regions = [{"bbox": box, "class": "person", "action": "fill", "applies_to": "both"},
               {"bbox": [440, 0, 512, 60], "class": "person", "action": "fill", "applies_to": "both"},
               {"bbox": [165, 55, 245, 160], "class": "face", "action": "blur", "applies_to": "both"}]
    before = segment.counts()
    masks = segment.refine(photo, regions, policy, seg, frame_ms=60_000.0)  # no budget fallback under load
    assert set(masks) == {0}
    assert regions[0]["shape"] == "mask" and "mask_fallback" not in regions[0]
    assert regions[1]["shape"] == "box" and regions[1]["mask_fallback"] == "small"
    assert "shape" not in regions[2]
    after = segment.counts()
    assert after.get("mask_small", 0) == before.get("mask_small", 0) + 1
    # A box-shaped person rule never runs the segmenter; the face inside the filled person box is
    # painted by that box (COVERED: nothing of its own).
    boxes = segment.refine(photo, regions, parse_policy({"version": "b", "rules": [{"class": "person"}]}, "p"), seg)
    assert boxes == {2: segment.COVERED}


def _nan_model(tmp_path: Path) -> Path:
    """A real ONNX model with the segmenter's input and output shapes whose output is NaN."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, 256, 256, 3])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 256, 256, 1])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [helper.make_node("ReduceMean", ["input_1"], ["m"], axes=[3], keepdims=1),
             helper.make_node("Mul", ["m", "zero"], ["z"]), helper.make_node("Div", ["z", "zero"], ["out"])]
    model = helper.make_model(helper.make_graph(nodes, "nan", [x], [y], [zero]),
                              opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "nan.onnx"
    onnx.save(model, path)
    card = tmp_path / "nan.toml"
    text = shipped_card("selfie_segmentation").read_text()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    text = text.replace('file = "selfie_segmentation.onnx"', f'file = "{path}"')
    text = "\n".join(f'sha256 = "{sha}"' if line.startswith("sha256") else line for line in text.splitlines())
    card.write_text(text)
    return card


def test_a_faulty_segmenter_or_a_spent_budget_keeps_the_whole_box(tmp_path: Path, seg: segment.Segmenter) -> None:
    photo, box, _ = segment.astronaut()
    policy = parse_policy(MASK_POLICY, "p.toml")
    bad = segment.Segmenter(load_card(_nan_model(tmp_path)))
    regions = [{"bbox": list(box), "class": "person", "action": "fill", "applies_to": "both"}]
    before = segment.counts().get("mask_fault", 0)
    assert segment.refine(photo, regions, policy, bad) == {}  # no mask, nothing covered
    assert regions[0]["shape"] == "box" and regions[0]["mask_fallback"] == "fault"
    assert segment.counts()["mask_fault"] == before + 1
    color, depth = photo.copy(), np.full(photo.shape[:2], 900, np.uint16)
    segment.paint(color, depth, regions[0], None)
    x1, y1, x2, y2 = box
    assert not color[y1:y2, x1:x2].any() and not depth[y1:y2, x1:x2].any()  # the whole box, colour and depth
    two = [{"bbox": list(box), "class": "person", "action": "fill", "applies_to": "both"} for _ in range(2)]
    assert segment.refine(photo, two, policy, seg, frame_ms=-1.0) == {1: segment.COVERED}  # the same box twice
    assert [r["mask_fallback"] for r in two] == ["budget", "budget"]


@pytest.mark.parametrize(("rule", "expect"), [
    ({"class": "person", "shape": "oval"}, "p.toml: rules[0].shape: expected one of box, mask, got 'oval'"),
    ({"class": "face", "shape": "mask"}, "p.toml: rules[0].shape: expected \"box\" (a mask is made only for"),
    ({"class": "person", "shape": "mask", "action": "drop_frame"}, "p.toml: rules[0].shape: expected \"box\" with"),
])
def test_invalid_shape_names_the_rule_and_field(rule: dict, expect: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy({"version": "v", "rules": [rule]}, "p.toml")
    assert str(e.value).startswith(expect)


def test_shape_round_trips_and_a_mask_holds_only_when_every_layer_asks_for_it() -> None:
    from redact.floor import stricter

    mask = parse_policy(MASK_POLICY, "p").rules[0]
    box = parse_policy({"version": "b", "rules": [{"class": "person"}]}, "p").rules[0]
    assert parse_policy(MASK_POLICY, "p").to_dict()["rules"][0]["shape"] == "mask"
    assert "shape" not in parse_policy({"version": "b", "rules": [{"class": "person"}]}, "p").to_dict()["rules"][0]
    assert stricter(mask, box).shape == "box" and stricter(box, mask).shape == "box"
    assert stricter(mask, mask).shape == "mask"


def test_stage_redacts_only_the_persons_pixels_in_colour_and_depth(tmp_path: Path) -> None:
    from redact import build_stage
    from redact.config import RedactConfig

    photo, _, face = segment.astronaut()
    color = np.full((480, 640, 3), 128, np.uint8)
    color[:, 64:576] = photo[32:512]  # the astronaut, face at y 23-128, x 229-309
    depth = np.full((480, 640), 1500, np.uint16)
    frame = RGBDFrame("d", "s", 0, 0, 0.0, color, depth, 1000.0, Intrinsics(640, 480, 525.0, 525.0, 319.5, 239.5))
    p = tmp_path / "p.toml"
    p.write_text('version = "mask-1"\n[[rules]]\nclass = "face"\n'
                 '[[rules]]\nclass = "person"\naction = "fill"\nshape = "mask"\nmargin = 0.05\n')
    stage = build_stage(RedactConfig(policy=str(p), budget_ms=10000.0, person_every=1))
    assert not stage.status()["load_error"]
    out = stage.apply(frame)
    people = [r for r in out.redaction["regions"] if r["class"] == "person"]
    assert people and people[0]["shape"] == "mask"  # the frame's first person is always segmented
    text = json.dumps(out.redaction)
    assert len(text) < 20_000 and "_mask" not in text  # the bbox, not the mask's bits
    x1, y1, x2, y2 = people[0]["bbox"]
    inside = out.color[y1:y2, x1:x2]
    filled = (inside == 0).all(axis=2)
    untouched = (inside == color[y1:y2, x1:x2]).all(axis=2)
    assert filled.mean() >= 0.3 and untouched.mean() >= 0.05  # the person painted, part of the box spared
    assert (out.depth[y1:y2, x1:x2] == 0).mean() == pytest.approx(filled.mean(), abs=0.05)
    fx1, fy1, fx2, fy2 = face[0] + 64, face[1] - 32, face[2] + 64, face[3] - 32
    assert not out.color[fy1:fy2, fx1:fx2].any()  # every face pixel filled
    masks = stage.status()["person_masks"]
    assert masks["mask"] >= 1 and masks["model"]["name"] == "selfie-segmentation"
    stage.close()


def test_mask_settings_come_from_config_and_errors_name_the_key(seg: segment.Segmenter) -> None:
    from capture.config import ConfigError
    from device import config
    from redact.config import RedactConfig

    for table, needle in (({"mask_dilate": 2}, "redact.mask_dilate: expected a value ≤"),
                          ({"mask_threshold": "high"}, "redact.mask_threshold: expected a number"),
                          ({"mask_min_fill": -0.1}, "redact.mask_min_fill: expected a value ≥")):
        with pytest.raises(ConfigError) as e:
            config.from_table({"redact": table})
        assert needle in str(e.value)
    photo, box, _ = segment.astronaut()
    try:
        tight = segment.configure(RedactConfig(mask_dilate=0.0, mask_threshold=0.6))
        m_tight = seg.mask(photo, box)
        loose = segment.configure(RedactConfig(mask_dilate=0.3))
        m_loose = seg.mask(photo, box)
    finally:
        segment.configure(RedactConfig())
    assert tight.dilate == 0.0 and loose.dilate == 0.3 and segment.settings() == segment.MaskSettings()
    assert m_tight.mean() + 0.05 < m_loose.mean()  # the settings change the mask


def test_shipped_people_masks_policy_loads_and_masks_persons(tmp_path: Path) -> None:
    from redact import build_stage
    from redact.config import RedactConfig
    from redact.policy import load_policy

    path = Path(segment.__file__).parent / "policies" / "people_masks.toml"
    pol = load_policy(path)
    assert pol.rule_for("person").shape == "mask" and segment.wants_mask(pol)
    photo, box, _ = segment.astronaut()
    h, w = photo.shape[:2]
    from capture.frame import now_stamps

    frame = RGBDFrame("t", "masks", 0, *now_stamps(), photo.copy(), np.full((h, w), 1000, np.uint16), 1000.0,
                      Intrinsics(w, h, 525.0, 525.0, w / 2, h / 2))
    stage = build_stage(RedactConfig(policy=str(path), budget_ms=10_000.0, person_every=1, text_every=1,
                                     mask_frame_ms=60_000.0))
    assert stage.load_error == "", stage.load_error
    out = stage.apply(frame)
    people = [r for r in out.redaction["regions"] if r["class"] == "person"]
    assert people and any(r.get("shape") == "mask" for r in people), people


def test_regions_inside_a_region_painted_as_strongly_are_painted_once() -> None:
    def r(bbox: list[int], action: str = "blur", applies_to: str = "both") -> dict:
        return {"bbox": bbox, "class": "text", "action": action, "applies_to": applies_to}

    regions = [r([0, 0, 100, 100]), r([10, 10, 50, 30]),  # a line inside a block: covered
               r([10, 40, 50, 60], "fill"),  # a stronger action inside a blur: painted
               r([60, 60, 90, 90], applies_to="both"), r([0, 0, 100, 100], "pixelate"),  # ...
               r([200, 0, 300, 50], "fill", "color"), r([210, 10, 250, 30], "fill", "both"),  # depth not covered
               r([0, 0, 100, 100])]  # the same box as 0: the first paints
    assert segment.covered(regions, set()) == [1, 3, 4, 7]
    assert segment.covered(regions, {0}) == [1, 3, 4]  # a masked region paints only its mask: 7 paints them
    # Painting: the covered line's pixels are exactly what its container made of them.
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, (120, 320, 3), dtype=np.uint8)
    depth = np.full((120, 320), 900, np.uint16)
    masks = segment.refine(color, regions[:2], parse_policy({"version": "b", "rules": [{"class": "text"}]}, "p"))
    once, both = color.copy(), color.copy()
    for i, reg in enumerate(regions[:2]):
        segment.paint(once, depth.copy(), reg, masks.get(i))
    segment.paint(both, depth.copy(), regions[0])
    assert np.array_equal(once, both) and not np.array_equal(once, color)
