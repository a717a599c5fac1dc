"""Rough edges a new user hits: config check vs run, all errors at once, comments kept by config set,
log-level case, default MQTT ports, removed keys that say where they went."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.cli import build_parser, main
from device.configfile import persist_value
from uplink.config import parse_broker


def test_config_check_reports_every_problem_run_would_hit(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    toml_as_cert = tmp_path / "settings.toml"
    toml_as_cert.write_text('[a]\nb = 1\n')
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[uplink]\ndepth_codec = "lz4"\ntls_cert = "{toml_as_cert}"\ntls_key = "{key}"\n'
                   '[console]\npin_hash = "1234"\n'
                   '[capture]\nfps = -3\nbogus = 1\n')
    assert main(["config", "check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "6 problems" in err
    assert f"uplink.tls_key: {key}: not an unencrypted PEM private key" in err  # "AAAA" is no key
    assert "uplink.depth_codec: unknown codec 'lz4'" in err
    assert "console.pin_hash: expected 'scrypt$N$r$p$salt$hash'" in err
    assert any(ln.strip().startswith(f"uplink.tls_cert: {toml_as_cert}:") and "PEM" in ln for ln in err.splitlines())
    assert "capture.fps: expected a value ≥" in err and "capture.bogus: unknown key" in err
    assert "Traceback" not in err


def test_config_check_ok_and_moved_key(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.toml"
    cfg.write_text('[uplink]\nbroker = "mqtt://localhost"\n')
    assert main(["config", "check", str(cfg)]) == 0
    cfg.write_text('[depth]\ncodec = "zstd"\n')  # did nothing; now says where the setting lives
    assert main(["config", "check", str(cfg)]) == 2
    assert "depth.codec: removed: the wire's depth codec is uplink.depth_codec" in capsys.readouterr().err


def test_config_set_keeps_comments_and_layout(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    original = ('# my device\n\n[capture]\n# thirty is too much on this Pi\nfps = 15.0   # measured\n'
                'source = "synthetic"\n\n[uplink]\nbroker = "mqtt://broker.local:1883"  # the van\n')
    cfg.write_text(original)
    persist_value(cfg, "capture.fps", 12.0)
    text = cfg.read_text()
    assert text == original.replace("fps = 15.0", "fps = 12.0")
    persist_value(cfg, "health.telemetry_period", 5.0)  # a new section is appended, the rest untouched
    text = cfg.read_text()
    assert text.startswith(original.replace("fps = 15.0", "fps = 12.0"))
    assert "[health]\ntelemetry_period = 5.0" in text


@pytest.mark.parametrize("level", ["debug", "Info", "WARNING", "error"])
def test_log_level_any_case(level: str) -> None:
    assert build_parser().parse_args(["--log-level", level, "status"]).log_level == level.upper()
    assert build_parser().parse_args(["status", "--log-level", level]).log_level == level.upper()


def test_default_mqtt_ports() -> None:
    assert parse_broker("mqtt://broker.local") == ("mqtt", "broker.local", 1883, False)
    assert parse_broker("mqtts://broker.local/") == ("mqtts", "broker.local", 8883, True)
    assert parse_broker("mqtt://[::1]") == ("mqtt", "::1", 1883, False)
    assert parse_broker("mqtt://h:1884") == ("mqtt", "h", 1884, False)
    from capture.config import ConfigError

    with pytest.raises(ConfigError, match="mqtt://HOST"):
        parse_broker("mqtt://h:0")


def test_cloud_finds_camera_json_above_or_refuses(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import cv2
    import numpy as np

    from capture.frame import Intrinsics
    from capture.tum import write_camera_json

    ses = tmp_path / "ses"
    (ses / "rgb").mkdir(parents=True)
    (ses / "depth").mkdir()
    cv2.imwrite(str(ses / "rgb" / "1.png"), np.full((48, 64, 3), 128, np.uint8))
    cv2.imwrite(str(ses / "depth" / "1.png"), np.full((48, 64), 1000, np.uint16))  # 1 m at scale 1000
    argv = ["cloud", str(ses / "rgb" / "1.png"), str(ses / "depth" / "1.png"), "-o", str(tmp_path / "c.ply")]
    assert main(argv) == 2  # no camera.json anywhere: refuse instead of assuming scale 5000
    assert "no camera.json beside or above" in capsys.readouterr().err
    write_camera_json(ses / "camera.json", Intrinsics(64, 48, 50.0, 50.0, 31.5, 23.5), 1000.0)
    assert main(argv) == 0
    assert f"camera from {ses / 'camera.json'}" in capsys.readouterr().err
    ply = (tmp_path / "c.ply").read_bytes()
    import open3d as o3d

    pts = np.asarray(o3d.io.read_point_cloud(str(tmp_path / "c.ply")).points)
    assert ply and np.allclose(pts[:, 2], 1.0)  # read at the recording's scale (1000), not 5000
    assert main([*argv[:3], "--camera", "tum", *argv[3:]]) == 2  # TUM's camera is 640×480: says so
    assert "640×480" in capsys.readouterr().err


def test_a_bug_is_not_reported_as_bad_input(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import device.commands.status as status

    def broken(args):  # type: ignore[no-untyped-def]
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(status, "run", broken)
    assert main(["status"]) == 1
    assert "internal error: ValueError" in capsys.readouterr().err and True
    with pytest.raises(ValueError):
        main(["status", "--debug"])


def _tum_folder(out: Path, n: int) -> None:
    from capture.synthetic import SyntheticSource
    from capture.tum import TumWriter

    src = SyntheticSource(pace="fast", n_frames=n, width=160, height=120)
    src.open()
    w = TumWriter(out)
    for f in iter(src.read, None):
        w.append(f.replace(t_utc=1000.0 + f.seq / 30))
    w.close()


def test_record_of_a_fast_replay_keeps_every_frame_and_writes_manifests(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A recording is offline: --pace fast used to outrun redaction and drop frames before it."""
    import json

    src = tmp_path / "src"
    _tum_folder(src, 40)
    out = tmp_path / "rec"
    assert main(["record", "--source", f"replay:{src}", "--pace", "fast", "--out", str(out), "--seconds", "60",
                 "--state-dir", str(tmp_path / "state")]) == 0
    err = capsys.readouterr().err
    import re

    # every frame reached redaction (none dropped before it); a loaded machine may still withhold some on
    # model timeouts, and those are counted by reason
    m = re.search(r"recorded (\d+) frames .*\(captured 40, dropped before redaction 0, withheld (.*)\)", err)
    assert m and "{" not in err, err
    recorded = int(m.group(1))
    withheld = sum(int(n) for n in re.findall(r"(\d+)", m.group(2)))
    assert recorded + withheld == 40 and recorded > 0
    lines = [json.loads(ln) for ln in (out / "manifests.jsonl").read_text().splitlines()]
    assert len(lines) == recorded and all(ln["redacted"] and "regions" in ln["manifest"] for ln in lines)
    assert not (out / "UNREDACTED").exists()
    assert "\r" not in err  # not a terminal: plain lines


def test_unredacted_recording_is_marked_loudly(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    src = tmp_path / "src"
    _tum_folder(src, 5)
    out = tmp_path / "rec"
    assert main(["record", "--source", f"replay:{src}", "--pace", "fast", "--no-redact", "--out", str(out),
                 "--seconds", "60", "--state-dir", str(tmp_path / "state")]) == 0
    err = capsys.readouterr().err
    assert err.count("NOT redacted") == 2  # before and after
    assert "NOT redacted" in (out / "UNREDACTED").read_text()
    assert not any(json.loads(ln)["redacted"] for ln in (out / "manifests.jsonl").read_text().splitlines())


def test_progress_fits_the_terminal_and_is_plain_otherwise() -> None:
    import io

    from rich.console import Console

    from device.progress import Progress, words

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80, color_system=None)
    p = Progress("demo", 20.0, console=console)
    for t in range(0, 21, 5):
        p.update(float(t), captured=600 * t, redacted=599 * t, withheld=3, dropped=2, spooled=590 * t, sent=12345,
                 fps=29.97)
    p.close()
    rendered = buf.getvalue()
    assert "dropped 2" in rendered
    visible = [ln for ln in rendered.replace("\r", "\n").splitlines() if ln.strip()]
    import re

    assert all(len(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", ln)) <= 80 for ln in visible)
    plain = io.StringIO()
    p = Progress("record", 10.0, stream=plain, plain_every=0.0)
    p.update(1.0, captured=30, dropped=0)
    p.close(10.0)
    assert plain.getvalue().splitlines() == ["record: 1/10 s: captured 30, dropped 0",
                                             "record: 10/10 s: captured 30, dropped 0"]
    assert words({"model_timeout": 2}) == "model timeout 2" and words(None) == "none" and words({}) == "none"
