"""The Pi-readiness tools' argument handling: tools/arm64_smoke.sh and tools/aarch64_wheels.py.

Only the paths that stop before any network or build: every call here must exit within seconds. The real
emulated run (a ~1 GB Debian arm64 root under qemu) is never started from the suite; run
`sudo tools/arm64_smoke.sh` by hand (docs/hardware.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "tools" / "arm64_smoke.sh"


def smoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SMOKE), *args], capture_output=True, text=True, timeout=30)


def test_smoke_script_parses_and_has_help():
    assert subprocess.run(["bash", "-n", str(SMOKE)], capture_output=True, timeout=30).returncode == 0
    r = smoke("--help")
    assert r.returncode == 0
    assert "--root DIR" in r.stdout and "bookworm" in r.stdout and "emulated" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--root", "relative/dir"], "must be an absolute path"),
    (["--root", "/"], "a system folder"),
    (["--root", "/var/tmp"], "a system folder"),
    (["--root", str(REPO / "arm64root")], "inside the repository"),
    (["--root", str(REPO / "pyproject.toml")], "inside the repository"),
    (["--frobnicate"], "unknown argument: --frobnicate"),
    (["--root"], "--root needs a folder"),
    (["--image", "/no/such/photo.jpg"], "--image /no/such/photo.jpg: no such file"),
])
def test_smoke_refuses_bad_arguments_before_doing_anything(args, message):
    r = smoke(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_smoke_refuses_a_folder_it_did_not_build(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    r = smoke("--root", str(tmp_path))
    assert r.returncode == 2
    assert "not a root this script built" in r.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    r = smoke("--root", str(not_dir))
    assert r.returncode == 2 and "exists and is not a folder" in r.stderr


def test_smoke_refuses_an_image_that_is_not_a_photo(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("x")
    r = smoke("--root", str(tmp_path / "root"), "--image", str(txt))
    assert r.returncode == 2 and "not a jpg/png" in r.stderr
    assert not (tmp_path / "root").exists()


def test_aarch64_wheels_names_an_unknown_extra():
    r = subprocess.run([sys.executable, str(REPO / "tools" / "aarch64_wheels.py"), "--extra", "nope"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "--extra nope: pyproject.toml has no such extra" in r.stderr


def test_aarch64_wheels_evaluates_markers_for_the_board_not_this_machine():
    import importlib.util

    spec = importlib.util.spec_from_file_location("aarch64_wheels", REPO / "tools" / "aarch64_wheels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    reqs = ["numpy>=1.26",
            "pyrealsense2>=2.55; platform_system == 'Linux' and platform_machine == 'x86_64'",
            "pyrealsense2>=2.55; platform_machine != 'aarch64'",
            "depthai>=3.0; platform_machine == 'aarch64'",
            "tomli>=2; python_version < '3.11'"]
    assert mod.for_target(reqs, "3.11") == ["numpy>=1.26", "depthai>=3.0"]
    assert mod.for_target(["tomli>=2; python_version < '3.11'"], "3.10") == ["tomli>=2"]
    # The project's own test extra: the camera SDK tests are x86-only, so they never reach the board.
    assert not any("pyrealsense2" in r for r in mod.for_target(mod.requirements(["test", "realsense"]), "3.11"))
