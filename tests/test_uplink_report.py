"""report.html: self-contained (no external references), with counts, timeline SVGs and thumbnails."""

from __future__ import annotations

import json
import re

from uplink_helpers import make_frame

from uplink import messages, wire
from uplink.ingest import Ingest


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
    assert html.count("<svg") == 4  # fps, latency, drops, bytes
    assert len(re.findall(r'src="data:image/jpeg;base64,', html)) == 2 * 8  # 8 thumbnails + their depth
    # self-contained: nothing fetched from anywhere (the SVG namespace is an identifier, not a fetch)
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
