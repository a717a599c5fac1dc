"""report.html: self-contained (no external references), with counts, timeline SVGs and thumbnails."""

from __future__ import annotations

import json
import re

from uplink_helpers import make_frame

from uplink import messages, wire
from uplink.backend.ingest import Ingest


def test_report_counts_timeline_thumbnails(tmp_path) -> None:
    ing = Ingest("mqtt://127.0.0.1:1", tmp_path)
    codec = messages.depth_codec("delta-zstd")
    seqs = [s for s in range(30) if s not in (7, 8, 20)]  # three frames never arrive: gaps
    for s in seqs:
        msg = wire.encode(messages.encode_frame(make_frame(s, cloud=(s == 10)), codec, 80))
        assert ing.handle("crowdcap/v1/dev1/frame", wire.single_chunk(msg)) == "frame"
    ing.sink.finalize_all()
    html = (tmp_path / "dev1" / "s1" / "report.html").read_text()
    summary = json.loads(re.search(r'<script type="application/json" id="summary">(.*?)</script>', html).group(1))
    assert summary["frames"] == 27 and summary["missing_in_range"] == 3 and summary["keyframes"] == 2  # 0 and 10 (20 is missing)
    assert summary["regions"] == 27
    assert html.count("<svg") >= 5  # fps, latency, gaps, bytes, trajectory (health and stages need telemetry)
    assert len(re.findall(r'src="data:image/jpeg;base64,', html)) == 2 * 8  # 8 thumbnails + their depth
    # self-contained: nothing fetched from anywhere (the SVG namespace is an identifier, not a fetch)
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def _send(ing: Ingest, frame, meta: dict | None = None, manifest: object = None) -> str:
    m = messages.encode_frame(frame, messages.depth_codec("delta-zstd"), 80)
    if meta:
        m.sections[wire.SEC_META] = wire.json_bytes(json.loads(m.sections[wire.SEC_META]) | meta)
    if manifest is not None:
        m.sections[wire.SEC_MANIFEST] = wire.json_bytes(manifest)
    return ing.handle("crowdcap/v1/dev1/frame", wire.single_chunk(wire.encode(m)))


def test_clock_jump_and_odd_manifests_do_not_break_the_report(tmp_path) -> None:
    """A Pi without a clock sends 1970 timestamps until NTP: the timeline used one array slot per
    second of the span (56 years: the ingest was killed). Odd manifests and poses are survived."""
    ing = Ingest("mqtt://127.0.0.1:1", tmp_path)
    assert _send(ing, make_frame(0).replace(t_utc=1.0)) == "frame"
    assert _send(ing, make_frame(1)) == "frame"
    assert _send(ing, make_frame(2), manifest={"regions": 5}) == "frame"
    assert _send(ing, make_frame(3), manifest={"regions": [3, {"bbox": ["a", 1, 2, 3]}, {"bbox": [1, 1, 9, 9]}]}) == "frame"
    assert _send(ing, make_frame(4), meta={"pose": [1, 2]}) == "rejected"
    assert _send(ing, make_frame(5), meta={"intrinsics": [1]}) == "rejected"
    assert ing.stats()["rejected"] == {"bad_meta": 2}
    ing.sink.finalize_all()
    html = (tmp_path / "dev1" / "s1" / "report.html").read_text()
    summary = json.loads(re.search(r'<script type="application/json" id="summary">(.*?)</script>', html).group(1))
    assert summary["frames"] == 4 and summary["regions"] == 2 + 2  # frames 0, 1 have one each; frame 3 two dicts
    assert len((tmp_path / "dev1" / "s1" / "trajectory.txt").read_text().splitlines()) == 2 + 4
