"""The ingest's periodic report regeneration is throttled by its own cost (a long session's report
reads the whole commit log); the last one, at stop, always runs."""

from __future__ import annotations

from uplink_helpers import make_frame

from uplink import messages, wire
from uplink.backend import sink as sink_mod
from uplink.backend.ingest import Ingest


def _ingest_with_frames(tmp_path, seqs) -> Ingest:  # noqa: ANN001
    ing = Ingest("mqtt://127.0.0.1:1", tmp_path / "out")
    for seq in seqs:
        msg = messages.encode_frame(make_frame(seq), messages.depth_codec("delta-zstd"), 80)
        assert ing.handle("crowdcap/v1/dev1/frame", wire.single_chunk(wire.encode(msg))) == "frame"
    return ing


def test_periodic_finalize_waits_in_proportion_to_its_cost_final_one_always_runs(tmp_path) -> None:
    ing = _ingest_with_frames(tmp_path, range(3))
    root = tmp_path / "out" / "dev1" / "s1"
    ing._finalize(throttle=True)  # the first round runs
    assert (root / "report.html").exists() and len((root / "rgb.txt").read_text().splitlines()) == 2 + 3
    _ingest_more = messages.encode_frame(make_frame(3), messages.depth_codec("delta-zstd"), 80)
    assert ing.handle("crowdcap/v1/dev1/frame", wire.single_chunk(wire.encode(_ingest_more))) == "frame"
    ing._finalize(throttle=True)  # right after: deferred (20× its cost has not passed), counted
    assert ing.sink.counters["finalize_deferred"] == 1
    assert len((root / "rgb.txt").read_text().splitlines()) == 2 + 3
    ing._finalize()  # the ingest's last round (stop): never deferred
    assert len((root / "rgb.txt").read_text().splitlines()) == 2 + 4
    assert ing.sink.counters["finalize_deferred"] == 1


def test_without_a_cost_factor_nothing_is_deferred(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sink_mod, "FINALIZE_GAP_FACTOR", 0.0)
    ing = _ingest_with_frames(tmp_path, range(2))
    for _ in range(3):
        ing.sink.sessions()[0].dirty = True
        ing._finalize(throttle=True)
    assert ing.sink.counters["finalize_deferred"] == 0


def test_report_preview_reads_each_cloud_down_to_its_share(tmp_path, monkeypatch) -> None:
    """A long session's clouds never pile up in memory: each keeps its share of MAX_POINTS as read."""
    import numpy as np

    from uplink.backend import preview

    root = tmp_path / "s"
    (root / "clouds").mkdir(parents=True)
    frames = []
    for seq in range(10):
        pose = np.eye(4)
        pose[0, 3] = seq  # each cloud lands 1 m further along x
        frames.append({"seq": seq, "pose": pose.ravel().tolist()})
        pts = np.random.default_rng(seq).random((500, 3)).astype(np.float32)
        sink_mod.write_ply(root / "clouds" / f"{seq:08d}.ply", pts, np.full((500, 3), seq, np.uint8))
    all_pts, _ = preview.world_clouds(root, frames)
    assert len(all_pts) == 10 * 500  # under the cap: every point
    monkeypatch.setattr(preview, "MAX_POINTS", 1000)
    reads = []
    real_read = preview.read_ply
    monkeypatch.setattr(preview, "read_ply", lambda p: reads.append(p) or real_read(p))
    pts, cols = preview.world_clouds(root, frames)
    assert len(reads) == 10 and len(pts) == 1000
    assert sorted(set(np.floor(pts[:, 0]).astype(int))) == list(range(10))  # every cloud is in the preview
    assert sorted(set(cols[:, 0])) == list(range(10)) and all(np.count_nonzero(cols[:, 0] == k) == 100
                                                             for k in range(10))
