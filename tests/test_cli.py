import subprocess
import sys
from pathlib import Path

import pytest

from device.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def registered():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return list(sub.choices)


def test_all_planned_commands_exist():
    names = registered()
    for planned in COMMANDS:
        assert planned.replace("_", "-") in names or planned in names, f"crowdcap {planned} is missing"


@pytest.mark.parametrize("name", registered())
def test_help_everywhere(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_version_and_console_script():
    out = subprocess.run([sys.executable, "-m", "device.cli", "--version"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("crowdcap ")


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys; from device.cli import build_parser; build_parser(); "
            "heavy = [m for m in ('open3d', 'onnxruntime', 'paho', 'torch') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_bad_flags_are_errors_not_tracebacks(capsys, tmp_path):
    assert main(["run", "--source", "webcam9", "--max-frames", "1", "--state-dir", str(tmp_path),
                 "--spool", str(tmp_path / "spool")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "capture.source" in err and "webcam9" in err
    assert main(["run", "--source", "replay:" + str(tmp_path / "nope"), "--state-dir", str(tmp_path),
                 "--spool", str(tmp_path / "spool"),
                 "--no-redact"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["run", "--max-frames", "0"]) == 2
    assert "--max-frames" in capsys.readouterr().err


def test_record_seconds_must_be_finite(capsys, tmp_path):
    """--seconds nan compared false to every deadline: it recorded until killed."""
    assert main(["record", "--seconds", "nan", "--out", str(tmp_path / "rec"), "--state-dir", str(tmp_path)]) == 2
    assert "--seconds: expected a positive number, got nan" in capsys.readouterr().err
