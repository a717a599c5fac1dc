"""`crowdcap view SESSION`: a Rerun .rrd (rerun-sdk is an optional extra; skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from capture.synthetic import SyntheticSource
from capture.tum import TumWriter
from device.cli import main


def test_view_writes_an_rrd_rerun_reads(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("rerun")
    src = SyntheticSource(pace="fast", n_frames=4, width=160, height=120)
    src.open()
    w = TumWriter(tmp_path / "s")
    for f in iter(src.read, None):
        w.append(f.replace(t_utc=1000.0 + f.seq / 30, pose=f.attachments["truth"]["pose"], keyframe=f.seq == 0,
                           redaction={"policy_version": "p", "regions": [{"bbox": [1, 2, 30, 40], "class": "face"}]}))
    w.close()
    out = tmp_path / "s.rrd"
    assert main(["view", str(tmp_path / "s"), "-o", str(out)]) == 0
    assert "4 frames logged" in capsys.readouterr().err
    data = out.read_bytes()
    assert len(data) > 10_000 and data[:3] == b"RRF"  # Rerun's file magic
    from rerun.chunk import RrdReader

    entities = {c.entity_path for c in RrdReader(str(out)).store().stream().to_chunks()}
    assert {"/world/camera/image", "/world/camera/depth", "/world/camera/image/redactions", "/world/camera",
            "/world/groundtruth", "/world/clouds/0"} <= entities, entities
