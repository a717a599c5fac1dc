"""`crowdcap devices`: enumeration of cameras, V4L2 nodes and serial ports, as text and JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from capture import open_source
from capture.config import ConfigError
from capture.devices import enumerate_devices, list_serial, list_video


def test_video_nodes_from_sysfs(tmp_path: Path) -> None:
    sys_root = tmp_path / "video4linux"
    for name, label, index in (("video10", "Stereo Cam R", "0"), ("video2", "Stereo Cam L", "0"),
                               ("video3", "Stereo Cam L", "1")):
        (sys_root / name).mkdir(parents=True)
        (sys_root / name / "name").write_text(label + "\n")
        (sys_root / name / "index").write_text(index + "\n")
    (sys_root / "v4l-subdev0").mkdir()
    found = list_video(sys_root, Path("/dev"))
    assert [(d["device"], d["name"], d["capture"]) for d in found] == [
        ("/dev/video2", "Stereo Cam L", True), ("/dev/video3", "Stereo Cam L", False),
        ("/dev/video10", "Stereo Cam R", True)]
    assert list_video(tmp_path / "missing") == []


def test_enumeration_reports_every_kind() -> None:
    found = enumerate_devices()
    assert set(found) == {"sdk", "errors", "realsense", "oakd", "video", "serial"}
    assert found["errors"] == {}
    assert all(d["device"].startswith("/dev/") for d in list_serial())


def test_cli_json_and_text() -> None:
    cmd = [sys.executable, "-m", "device.cli", "devices"]
    out = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(out.stdout)  # one JSON object on stdout; SDK chatter goes to stderr
    assert set(found["sdk"]) == {"pyrealsense2", "depthai"} and isinstance(found["serial"], list)
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    for d in found["serial"]:
        assert d["device"] in text
    if not any(found[k] for k in ("realsense", "oakd", "video", "serial")):
        assert "no capture devices found" in text


@pytest.mark.parametrize("spec,module,extra", [("realsense", "pyrealsense2", "crowdcap[realsense]"),
                                               ("oakd:1944301011", "depthai", "crowdcap[oakd]")])
def test_camera_without_its_sdk_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch, spec: str, module: str,
                                                        extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=re.escape(extra)):
        open_source(spec)
    from capture import oakd, realsense

    assert realsense.list_devices() == [] if module == "pyrealsense2" else oakd.list_devices() == []


def test_unknown_source_names_the_choices() -> None:
    with pytest.raises(ValueError, match="stereo:CONFIG, realsense"):
        open_source("kinect")
    with pytest.raises(ValueError, match="stereo needs a config file"):
        open_source("stereo")
