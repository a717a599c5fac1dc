"""`crowdcap redact` and `crowdcap models` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from capture.synthetic import SyntheticSource
from capture.tum import TumWriter
from device.cli import main
from redact.cards import default_card_path
from redact.testing import write_card

ASTRONAUT = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    cv2.imwrite(str(d / "astronaut.jpg"), ASTRONAUT)
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[100:356, 200:456] = cv2.resize(ASTRONAUT, (256, 256))
    cv2.imwrite(str(d / "canvas.png"), canvas)
    cv2.imwrite(str(d / "canvas_depth.png"), np.full((480, 640), 1500, np.uint16))
    return d


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_redact_images_and_pair_json(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    pair = f"{inputs / 'canvas.png'}+{inputs / 'canvas_depth.png'}"
    assert main(["redact", str(inputs / "astronaut.jpg"), pair, "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    rows = json_lines(captured.out)
    assert [r["input"] for r in rows] == [str(inputs / "astronaut.jpg"), pair]
    assert "[2/2]" in captured.err  # progress on stderr
    photo, canvas = rows
    assert photo["output"] == str(out / "astronaut.jpg") and Path(photo["output"]).is_file()
    assert set(photo["regions"][0]) == {"bbox", "class", "score", "action"} and photo["ms"] > 0
    x1, y1, x2, y2 = photo["regions"][0]["bbox"]
    assert x1 <= 165 and y1 <= 55 and x2 >= 245 and y2 >= 160  # the face, in input pixels
    x1, y1, x2, y2 = canvas["regions"][0]["bbox"]
    depth = cv2.imread(str(out / "canvas.depth.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and not depth[y1:y2, x1:x2].any() and depth[0, 0] == 1500
    original = cv2.imread(str(inputs / "canvas.png"))
    redacted = cv2.imread(canvas["output"])
    assert not np.array_equal(original[y1:y2, x1:x2], redacted[y1:y2, x1:x2])
    assert np.array_equal(original[:y1], redacted[:y1])
    assert cv2.imread(str(inputs / "canvas.png")) is not None  # inputs untouched


def test_redact_tum_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = SyntheticSource(pace="fast", n_frames=4)
    src.open()
    writer = TumWriter(tmp_path / "seq")
    faces = []
    for i in range(4):
        f = src.read()
        assert f is not None
        faces.append(f.attachments["truth"]["faces"])
        writer.append(f.replace(t_utc=1000.0 + i / 30))
    writer.close()
    out = tmp_path / "out"
    assert main(["redact", str(tmp_path / "seq"), "--out", str(out), "--json"]) == 0
    row = json_lines(capsys.readouterr().out)[0]
    assert row["output"] == str(out / "seq") and row["withheld"] == 0
    manifests = json_lines((out / "seq" / "redaction.jsonl").read_text())
    assert len(manifests) == 4 and all(m["coverage"] == "detected" for m in manifests)
    assert len(row["regions"]) >= sum(len(f) for f in faces)
    assert len((out / "seq" / "rgb.txt").read_text().splitlines()) == 4 + 2


def test_redact_errors(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["redact", str(inputs / "nope.png"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.png: not found" in capsys.readouterr().err
    assert main(["redact", str(inputs / "canvas.png"), "--out", str(inputs)]) == 2
    assert "refusing to redact in place" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "1"\n[[rules]]\nclass = "face"\naction = "smudge"\n')
    assert main(["redact", str(inputs / "canvas.png"), "--out", str(tmp_path / "o"), "--policy", str(bad)]) == 2
    assert "rules[0].action" in capsys.readouterr().err
    (inputs / "broken.png").write_bytes(b"not an image")
    assert main(["redact", str(inputs / "broken.png"), "--out", str(tmp_path / "o2"), "--json"]) == 1
    captured = capsys.readouterr()
    assert "broken.png: cannot read the image" in json_lines(captured.out)[0]["error"]


def test_models_list_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "centerface" and rows[0]["card"] == str(default_card_path())
    assert main(["models", "verify"]) == 0
    assert "ok" in capsys.readouterr().out
    (tmp_path / "m.onnx").write_bytes(b"tampered")
    card = write_card(tmp_path, "m", "m.onnx", "centerface", ["face"], sha256="d" * 64)
    assert main(["models", "verify", str(card)]) == 2
    err = capsys.readouterr().err
    assert str(card) in err and "sha256" in err and "m.onnx" in err
    assert main(["models", "verify", str(tmp_path / "none.toml")]) == 2
    assert "none.toml: model card not found" in capsys.readouterr().err


def test_redact_tum_folder_reports_withheld_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Withheld frames are not written (fail closed): the command says how many, not just a success."""
    src = SyntheticSource(pace="fast", n_frames=3)
    src.open()
    writer = TumWriter(tmp_path / "seq")
    for i in range(3):
        writer.append(src.read().replace(t_utc=1000.0 + i / 30))
    writer.close()
    policy = tmp_path / "policy.toml"
    policy.write_text('version = "no-faces"\n[[rules]]\nclass = "face"\naction = "drop_frame"\n')
    out = tmp_path / "out"
    assert main(["redact", str(tmp_path / "seq"), "--out", str(out), "--policy", str(policy), "--json"]) == 0
    captured = capsys.readouterr()
    row = json_lines(captured.out)[0]
    assert row["withheld"] == 3 and "3 frame(s) withheld" in captured.err
    assert [m["withheld"] for m in json_lines((out / "seq" / "redaction.jsonl").read_text())] == ["policy_drop"] * 3
