"""`python -m redact.quantize`: which nodes stay in float, and every generated int8 model that ships is
reproduced byte for byte by the command written in its card."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import onnx
import pytest

from redact.cards import load_card
from redact.quantize import float_nodes, main
from redact.runtime import prepared_bytes

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "redact" / "models"


def generated_cards() -> list[Path]:
    return sorted(p for p in MODELS.glob("*.toml") if p.read_text().startswith("# GENERATED"))


def test_float_nodes_first_convs_and_heads() -> None:
    model = onnx.load_from_string(prepared_bytes(load_card(MODELS / "retinaface.toml")))
    assert float_nodes(model, 0, False) == []
    first = float_nodes(model, 2, False)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert first[:2] == convs[:2] and len(first) == 4  # each conv and the LeakyRelu after it
    by_name = {n.name: n for n in model.graph.node}
    assert {by_name[n].op_type for n in first[2:]} == {"LeakyRelu"}
    heads = float_nodes(model, 0, True)
    # 3 heads (class, box, landmarks) × 3 pyramid levels, nothing from the backbone
    assert len(heads) == 9 and all("head" in n.lower() for n in heads)


def test_generated_cards_say_how_they_were_made_and_verify(capsys: pytest.CaptureFixture) -> None:
    from device.cli import main as crowdcap

    cards = generated_cards()
    assert {c.stem for c in cards} >= {"retinaface-int8-f2", "centerface-int8"}
    for card in cards:
        line = card.read_text().splitlines()[1]
        assert line.startswith("#   python -m redact.quantize "), card
        # hash, graph and the start-up proof (3 known faces found at the card's own threshold)
        assert crowdcap(["models", "verify", str(card)]) == 0, capsys.readouterr()
        assert "ok" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("card", generated_cards(), ids=lambda p: p.stem)
def test_generated_model_is_reproduced_by_its_command(card: Path, tmp_path: Path) -> None:
    """Run the command from the card's header: the same model bytes, hence the card's sha256."""
    argv = shlex.split(card.read_text().splitlines()[1].removeprefix("#"))[3:]  # after python -m redact.quantize
    argv[0] = str(tmp_path)  # OUT_DIR
    i = argv.index("--card")
    argv[i + 1] = str(ROOT / argv[i + 1])
    assert main(argv) == 0
    made = tmp_path / load_card(card).file.name
    assert hashlib.sha256(made.read_bytes()).hexdigest() == load_card(card).sha256
