"""The configured spool quota bounds the files on disk (an SD card must not fill up), not only live data."""

from pathlib import Path

import pytest

from capture.frame import FrameWithheld
from capture.synthetic import SyntheticSource
from uplink.config import UplinkConfig
from uplink.spool import PRIO_FRAME, PRIO_KEYFRAME, Spool
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


@pytest.fixture
def small_tmpfs(tmpfs) -> Path:
    """A real 4 MiB filesystem the spool can fill."""
    return tmpfs("4m")


def test_small_card_evicts_by_priority_instead_of_failing_writes(small_tmpfs: Path) -> None:
    """Quota 1 GiB on a 4 MiB card: the filesystem is the budget. Plain frames are evicted (counted as
    `disk_frame`), keyframes and control records survive, and no write ever fails."""
    s = Spool(small_tmpfs, quota_bytes=1 << 30, fsync="always", segment_bytes=128 << 10, reserve_bytes=256 << 10)
    keep = []
    for i in range(400):  # 400 × 20 KB = 8 MB on a 4 MiB card
        prio = PRIO_KEYFRAME if i % 10 == 0 else PRIO_FRAME
        rid = s.append(bytes([i % 256]) * 20_000, prio, 1)
        assert rid is not None
        if prio == PRIO_KEYFRAME:
            keep.append(rid)
    st = s.stats()
    s.close()
    assert st.get("write_errors", 0) == 0
    assert st["evictions"].get("disk_frame", 0) > 100 and "disk_keyframe" not in st["evictions"]
    assert set(st["evictions"]) == {"disk_frame"}
    s2 = Spool(small_tmpfs, quota_bytes=1 << 30)
    assert set(keep) <= set(s2.pending_after(0, 10**6))
    assert len(s2) == 400 - st["evictions"]["disk_frame"]
    s2.close()
