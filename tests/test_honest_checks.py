"""Honest exits and checks (issue 16): `run` fails when it read nothing or withheld everything;
`config check` loads model cards, hashes and proves the models, validates pin_hash and PEM files,
and names the file on deep nesting; a binary rgb.txt or deep camera.json names the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from capture import tum
from device.cli import main
from redact.testing import write_blind, write_card


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--state-dir", str(tmp_path / "state"), "--spool", str(tmp_path / "spool"), *extra]


def config_file(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "crowdcap.toml"
    p.write_text(body)
    return p


def test_run_exits_non_zero_when_every_frame_was_withheld(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blind = write_blind(tmp_path)
    cfg = config_file(tmp_path, f'[redact]\nmodels = ["{blind}"]\n[depth]\nenabled = false\n'
                                '[capture]\nwidth = 160\nheight = 128\n')
    code = main(run_args(tmp_path, "--config", str(cfg), "--source", "synthetic", "--pace", "fast",
                         "--max-frames", "3"))
    err = capsys.readouterr().err
    assert code == 5, err
    assert "withheld every one of the 3 frames" in err and "no_model: 3" in err and "self-test" in err


def test_run_exits_non_zero_when_no_frame_could_be_read(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rec = tmp_path / "unreadable"  # a recording whose every image is damaged
    for kind in ("rgb", "depth"):
        (rec / kind).mkdir(parents=True)
        (rec / f"{kind}.txt").write_text(f"1.0 {kind}/a.png\n2.0 {kind}/b.png\n")
        for name in ("a", "b"):
            (rec / kind / f"{name}.png").write_bytes(b"junk")
    code = main(run_args(tmp_path, "--source", f"replay:{rec}", "--pace", "fast", "--max-frames", "2", "--no-redact"))
    err = capsys.readouterr().err
    assert code == 4 and "no frame could be read from replay:" in err and "cannot read" in err, err


def check(tmp_path: Path, body: str, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(["config", "check", str(config_file(tmp_path, body))])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.err


def test_config_check_loads_cards_hashes_and_proves_models(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad_card = tmp_path / "bad.toml"
    bad_card.write_text('name = "x"\n')
    code, err = check(tmp_path, f'[redact]\nmodels = ["{bad_card}"]\n', capsys)
    assert code == 2 and "redact.models[0]" in err and str(bad_card) in err and "version" in err, err

    (tmp_path / "junk.onnx").write_bytes(b"garbage" * 50)
    junk = write_card(tmp_path, "junk", "junk.onnx", "centerface", ["face"])  # the card's hash matches the junk
    code, err = check(tmp_path, f'[redact]\nmodels = ["{junk}"]\n', capsys)
    assert code == 2 and "not a loadable ONNX model" in err, err

    wrong = write_card(tmp_path, "wrong", "junk.onnx", "centerface", ["face"], sha256="a" * 64)
    code, err = check(tmp_path, f'[redact]\nmodels = ["{wrong}"]\n', capsys)
    assert code == 2 and "sha256" in err and hashlib.sha256(b"garbage" * 50).hexdigest() in err, err

    blind = write_blind(tmp_path)
    code, err = check(tmp_path, f'[redact]\nmodels = ["{blind}"]\n', capsys)
    assert code == 2 and "found 0 of 3 known faces" in err, err
    assert main(["models", "verify", str(blind)]) == 2  # `models verify` runs the proof too
    assert "found 0 of 3 known faces" in capsys.readouterr().err


def test_config_check_policy_floor_pin_hash_and_pem(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pol = tmp_path / "p.toml"
    pol.write_text('version = "x"\n[[rules]]\nclass = "face"\nmin_score = 1.0\n')
    code, err = check(tmp_path, f'[redact]\npolicy = "{pol}"\n', capsys)
    assert code == 2 and "rules[0].min_score" in err and "floor" in err, err

    code, err = check(tmp_path, '[console]\npin_hash = "1234"\n', capsys)
    assert code == 2 and "console.pin_hash" in err and "scrypt" in err, err

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    key = tmp_path / "key.pem"
    key.write_text("hello\n")
    cert = tmp_path / "cert.pem"
    cert.write_bytes(b"\x00\x01binary")
    code, err = check(tmp_path, f'[uplink]\ntls_ca = "{ca}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n', capsys)
    assert code == 2 and f"uplink.tls_ca: {ca}" in err and f"uplink.tls_key: {key}" in err, err
    assert f"uplink.tls_cert: {cert}" in err

    code, err = check(tmp_path, "", capsys)  # the defaults: the shipped CenterFace proves itself
    assert code == 0, err


def test_deep_nesting_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = tmp_path / "deep.toml"
    p.write_text("a = " + "[" * 50000 + "]" * 50000 + "\n")
    assert main(["config", "check", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "nested too deeply" in err and "Traceback" not in err

    cam = tmp_path / "camera.json"
    cam.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(tum.LayoutError, match=r"camera\.json: not readable JSON \(nested too deeply\)") as e:
        tum.read_camera_json(cam)
    assert str(cam) in str(e.value)


def test_binary_rgb_txt_names_the_file(tmp_path: Path) -> None:
    rgb = tmp_path / "rgb.txt"
    rgb.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 10)
    with pytest.raises(tum.LayoutError) as e:
        tum.read_list(rgb)
    assert str(rgb) in str(e.value) and "not a text file" in str(e.value)
