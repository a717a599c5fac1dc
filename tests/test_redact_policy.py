"""Policy and model-card validation: every error names the file, the rule/field, and what was wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from capture.config import ConfigError
from redact.cards import CardError, default_card_path, load_card, read_verified
from redact.config import RedactConfig
from redact.policy import DEFAULT_POLICY, PolicyError, load_policy
from redact.testing import write_card


def write(tmp_path: Path, text: str, name: str = "policy.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_default_policy_blurs_faces_in_colour_and_depth() -> None:
    assert load_policy(None) is DEFAULT_POLICY
    rule = DEFAULT_POLICY.rule_for("face")
    assert rule is not None and rule.action == "blur" and rule.applies_to == "both" and rule.margin >= 0.3
    assert DEFAULT_POLICY.on_fault == "withhold"


def test_valid_policy(tmp_path: Path) -> None:
    p = load_policy(write(tmp_path, """
version = "home-2"
on_fault = "obscure"
[[rules]]
class = "face"
action = "pixelate"
margin = 0.5
[[rules]]
class = "custom:bib"
action = "fill"
applies_to = "color"
min_score = 0.6
"""))
    assert p.version == "home-2" and p.on_fault == "obscure"
    assert p.rule_for("face").action == "pixelate"  # type: ignore[union-attr]
    bib = p.rule_for("custom:bib")
    assert bib is not None and bib.color and not bib.depth and bib.min_score == 0.6
    assert p.rule_for("plate") is None


@pytest.mark.parametrize("body, match", [
    ('version = "1"\n[[rules]]\nclass = "face"\naction = "smudge"\n', r"rules\[0\]\.action: expected one of blur"),
    ('version = "1"\n[[rules]]\nclass = "face"\n[[rules]]\nclass = "cat"\n', r"rules\[1\]\.class: expected one of face"),
    ('version = "1"\n[[rules]]\nclass = "face"\nmargin = -1\n', r"rules\[0\]\.margin: expected a number 0-2"),
    ('version = "1"\n[[rules]]\nclass = "face"\nmin_score = 2\n', r"rules\[0\]\.min_score"),
    ('version = "1"\n[[rules]]\nclass = "face"\nmin_score = 0.0\n', r"rules\[0\]\.min_score: expected a number 0\.01-1"),
    ('version = "1"\n[[rules]]\nclass = "face"\napplies_to = "audio"\n', r"rules\[0\]\.applies_to"),
    ('version = "1"\n[[rules]]\nclass = "face"\ncolour = 1\n', r"rules\[0\]\.colour: expected no such field"),
    ('version = "1"\n[[rules]]\nclass = "face"\n[[rules]]\nclass = "face"\n', r"rules\[1\]\.class: expected each class"),
    ('version = "1"\non_fault = "ignore"\n', r"on_fault: expected one of withhold, obscure"),
    ('[[rules]]\nclass = "face"\n', r"version: expected a non-empty string"),
    ('version = "1"\nrule = 3\n', r"rule: unknown field"),
    ('version = "1"\n[[rules]]\nclass = "custom:"\n', r"rules\[0\]\.class"),
    ("version = \n", r"not valid TOML"),
])
def test_policy_errors_name_rule_and_field(tmp_path: Path, body: str, match: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(PolicyError, match=match) as e:
        load_policy(path)
    assert str(path) in str(e.value)
    assert isinstance(e.value, ConfigError)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy(tmp_path / "nope.toml")


def test_default_card_pins_the_shipped_model() -> None:
    card = load_card(default_card_path())
    assert card.decoder == "centerface" and card.classes == ("face",)
    assert card.file.name == "centerface.onnx" and card.file.is_file()
    assert len(read_verified(card)) > 1_000_000  # the hash in the card matches the installed file


def card_text(**overrides: str) -> str:
    fields = {"name": '"m"', "version": '"1"', "file": '"m.onnx"', "sha256": '"' + "a" * 64 + '"',
              "decoder": '"yolo"', "classes": '["face"]'}
    fields.update(overrides)
    return "\n".join(f"{k} = {v}" for k, v in fields.items() if v) + "\n"


@pytest.mark.parametrize("overrides, match", [
    ({"decoder": '"mask"'}, r"decoder: expected one of centerface, retinaface, yolo"),
    ({"sha256": '"abc"'}, r"sha256: expected 64 hex digits"),
    ({"classes": '["face", "dog"]'}, r"classes\[1\]: expected one of face"),
    ({"classes": "[]"}, r"classes: expected a non-empty list"),
    ({"name": ""}, r"name: expected a non-empty string"),
    ({"file": '"package:nosuchpkg_xyz/m.onnx"'}, r"file: expected an installed package"),
    ({"file": '"package:os/m.onnx"'}, r"file: expected package:PACKAGE/RESOURCE with a package"),
    ({"colour": "1"}, r"colour: unknown field"),
    ({"input": '{ channels = "yuv" }'}, r"input\.channels: expected 'rgb' or 'bgr'"),
    ({"input": "{ size = [3, 3] }"}, r"input\.size"),
])
def test_card_errors_name_file_and_field(tmp_path: Path, overrides: dict[str, str], match: str) -> None:
    path = write(tmp_path, card_text(**overrides), "card.toml")
    with pytest.raises(CardError, match=match) as e:
        load_card(path)
    assert str(path) in str(e.value)


def test_card_file_hash_missing_and_corrupt(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    card = load_card(write_card(tmp_path, "m", "m.onnx", "yolo", ["face"], sha256="b" * 64))
    with pytest.raises(CardError, match=r"sha256: model file .*m\.onnx hashes to .* card says bbbb"):
        read_verified(card)
    card = load_card(write_card(tmp_path, "gone", "gone.onnx", "yolo", ["face"]))
    with pytest.raises(CardError, match=r"file: model file .*gone\.onnx not found"):
        read_verified(card)


def test_config_section_checks() -> None:
    RedactConfig().check()
    with pytest.raises(ConfigError, match="detect_width: expected a multiple of 32"):
        RedactConfig(detect_width=100).check()
    with pytest.raises(ConfigError, match="tile_width"):
        RedactConfig(tile_width=0).check()
