import json

import pytest

from capture.config import ConfigError
from device import config, settings
from device.cli import main


def test_defaults_are_valid():
    cfg = config.load()
    assert cfg.capture.width == 640 and cfg.capture.fps == 30.0
    assert cfg.device.resolved_id.startswith("cc-")


@pytest.mark.parametrize("table,needle", [
    ({"capture": {"fps": "fast"}}, "capture.fps: expected a number"),
    ({"capture": {"fps": 0}}, "capture.fps: expected a value ≥"),
    ({"capture": {"width": 64.5}}, "capture.width: expected an integer"),
    ({"capture": {"pace": "slow"}}, "capture.pace: expected one of"),
    ({"capture": {"colour": 1}}, "capture.colour: unknown key"),
    ({"device": {"id": "bad id!"}}, "device.id: expected"),
    ({"nosuch": {}}, "nosuch: unknown key"),
    ({"capture": 3}, "capture: expected a table"),
    ({"capture": {"loop": "yes"}}, "capture.loop: expected true or false"),
])
def test_errors_name_the_key(table, needle):
    with pytest.raises(ConfigError) as e:
        config.from_table(table)
    assert needle in str(e.value)


def test_file_errors_name_the_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("capture = [")
    with pytest.raises(ConfigError, match="c.toml: not valid TOML"):
        config.load(p)
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "missing.toml")


def test_overrides_validate_like_the_file():
    cfg = config.override(config.load(), **{"capture.source": "replay:/x", "uplink.broker": None})
    assert cfg.capture.source == "replay:/x"
    with pytest.raises(ConfigError, match="capture.fps"):
        config.override(cfg, **{"capture.fps": -3.0})


def test_parse_text_and_with_value():
    cfg = config.load()
    new = settings.with_value(cfg, "capture.fps", settings.parse_text("15"))
    assert new.capture.fps == 15.0 and cfg.capture.fps == 30.0
    assert settings.parse_text("replay:/d") == "replay:/d"


def test_cli_check_and_show_masks_secrets(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text('[uplink]\npassword = "hunter2"\n[capture]\nfps = 10\n')
    assert main(["config", "check", str(p)]) == 0
    assert main(["config", "show", "--config", str(p)]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out[out.index("{"):])
    assert shown["uplink"]["password"] == "***" and "hunter2" not in out
    assert shown["capture"]["fps"] == 10.0
    p.write_text("[capture]\nfps = 'x'\n")
    assert main(["config", "check", str(p)]) == 2
    assert "capture.fps" in capsys.readouterr().err


def test_capture_queue_auto_waits_out_a_face_bracket():
    from device.runtime import capture_queue_size

    cfg = config.load()
    assert cfg.pipeline.capture_queue == 0  # auto
    assert capture_queue_size(cfg) == cfg.redact.face_every + 2
    assert capture_queue_size(config.override(cfg, **{"redact.face_every": 1})) == 3
    assert capture_queue_size(config.override(cfg, **{"pipeline.capture_queue": 5})) == 5  # as set
    with pytest.raises(ConfigError, match="capture_queue"):
        config.override(cfg, **{"pipeline.capture_queue": -1})
