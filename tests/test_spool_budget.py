"""The configured spool quota bounds the files on disk (an SD card must not fill up), not only live data."""

from pathlib import Path

from capture.frame import FrameWithheld
from capture.synthetic import SyntheticSource
from uplink.config import UplinkConfig
from uplink.stage import build_stage, live_quota


def test_spool_files_stay_within_the_disk_budget(tmp_path: Path) -> None:
    budget_mb = 2.0
    stage = build_stage(UplinkConfig(spool_dir=str(tmp_path), spool_quota_mb=budget_mb), "dev", "s1")
    src = SyntheticSource(320, 240, pace="fast", cycle=4)
    manifest = {"policy_version": "t", "regions": [], "models": [], "coverage": "detected", "detector_ms": 0.0}
    peak = 0
    try:
        for _ in range(120):  # far more than fits: no broker, so nothing leaves but by eviction
            try:
                stage.apply(src.read().replace(redaction=manifest))
            except FrameWithheld:
                pass
            peak = max(peak, sum(p.stat().st_size for p in tmp_path.iterdir() if p.is_file()))
        evicted = sum(stage.status()["evictions"].values())
    finally:
        stage.close()
    assert evicted > 0
    assert peak <= budget_mb * 1024 * 1024
    assert live_quota(1 << 30) < (1 << 30) * 0.7
