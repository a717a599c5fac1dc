"""Bandwidth budget: the token bucket holds the send rate; over budget, frames degrade by policy, counted."""

from __future__ import annotations

import time

from uplink_helpers import IngestThread, committed_seqs, make_frame, uplink_cfg, wait_for_frames

from capture.frame import FrameWithheld
from uplink import build_stage
from uplink.budget import DEGRADE_KEYFRAMES_ONLY, DEGRADE_NONE, DEGRADE_QUALITY, TokenBucket, degrade_level


def test_token_bucket_and_levels() -> None:
    b = TokenBucket(1000, burst_seconds=1.0)
    assert b.wait_time(1000) == 0
    b.consume(1000)
    assert 0.4 < b.wait_time(500) <= 0.5
    assert TokenBucket(0).wait_time(10**9) == 0
    assert degrade_level(10**9, 0, 1) == DEGRADE_NONE
    assert degrade_level(500, 1000, 1.0) == DEGRADE_NONE
    assert degrade_level(1500, 1000, 1.0) == DEGRADE_QUALITY
    assert degrade_level(2500, 1000, 1.0) == DEGRADE_KEYFRAMES_ONLY


def test_budget_limits_rate_and_degrades_counted(tmp_path, broker) -> None:
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    rate = 150_000
    stage = build_stage(uplink_cfg(tmp_path, broker.url, bandwidth=rate, degrade_after=0.5, max_payload=8192),
                        "dev1", "s1")
    stage.start()
    n = 80
    t0 = time.monotonic()
    withheld = 0
    for i in range(n):
        try:
            stage.apply(make_frame(i))
        except FrameWithheld as e:
            assert e.reason == "bandwidth"
            withheld += 1
    st = stage.status()
    assert withheld == st["degraded_dropped_frames"]
    assert st["degraded_quality_frames"] > 0 and st["degraded_dropped_frames"] > 0
    assert st["frames_accepted"] + st["degraded_dropped_frames"] == n  # every frame accounted for
    assert stage.drain(60)
    elapsed = time.monotonic() - t0
    sent = stage.status()["sender"]["bytes_sent"]
    assert sent <= rate * (elapsed + 1.0) + 8192  # never above the budget (+1 s burst)
    accepted = stage.status()["frames_accepted"]
    wait_for_frames(out, accepted, 20)
    ing.stop()
    stage.close()
    seqs = committed_seqs(out)
    assert len(seqs) == accepted
    assert set(range(0, n, 10)) <= set(seqs)  # keyframes are never dropped by the policy
