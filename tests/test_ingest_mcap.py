"""`crowdcap ingest --mcap`: an MCAP per session written as frames are committed; readable after a cut
(append-only), complete after a clean stop, and dropped when the wearer takes frames back."""

from __future__ import annotations

import json
from pathlib import Path

from mcap.records import Message
from mcap.stream_reader import StreamReader
from uplink_helpers import make_frame

from uplink import messages, wire
from uplink.backend.config import IngestConfig
from uplink.backend.ingest import Ingest


def _send(ing: Ingest, s: int, t: float) -> None:
    f = make_frame(s).replace(t_utc=t)
    assert ing.handle("crowdcap/v1/dev1/frame", wire.single_chunk(wire.encode(
        messages.encode_frame(f, messages.depth_codec("zstd"), 80)))) == "frame"


def _messages(path: Path, cut: int = 0) -> list:  # type: ignore[type-arg]
    data = path.read_bytes()
    if cut:
        data = data[:-cut]
    cut_path = path.with_suffix(".cut")
    cut_path.write_bytes(data)
    out = []
    try:
        for r in StreamReader(cut_path.open("rb")).records:
            if isinstance(r, Message):
                out.append(r)
    except Exception:  # noqa: BLE001 - the torn tail of a cut file ends the stream
        pass
    return out


def test_live_mcap_is_readable_after_a_cut_and_whole_after_a_stop(tmp_path: Path) -> None:
    ing = Ingest("mqtt://127.0.0.1:1", tmp_path, config=IngestConfig(brokers=["mqtt://127.0.0.1:1"],
                                                                      out=str(tmp_path), mcap=True))
    for s in range(5):
        _send(ing, s, 1000.0 + s)
    files = list((tmp_path / "dev1" / "s1" / "mcap").glob("*.mcap"))
    assert len(files) == 1
    whole = _messages(files[0])
    assert len(whole) >= 5 * 4  # colour, depth, calibration, tf (+ regions, manifest) per frame
    torn = _messages(files[0], cut=7)  # power cut mid-record: every earlier record is kept
    assert len(torn) == len(whole) - 1
    ing.sink.live.close()
    from mcap.reader import make_reader

    with files[0].open("rb") as fh:
        reader = make_reader(fh)
        topics = {c.topic for _, c, _ in reader.iter_messages()}
        assert reader.get_summary() is not None
    assert {"/camera/color", "/camera/depth", "/tf", "/redaction/regions"} <= topics


def test_take_back_drops_the_live_mcap(tmp_path: Path) -> None:
    ing = Ingest("mqtt://127.0.0.1:1", tmp_path, config=IngestConfig(brokers=["mqtt://127.0.0.1:1"],
                                                                      out=str(tmp_path), mcap=True))
    for s in range(3):
        _send(ing, s, 1000.0 + s)
    assert list((tmp_path / "dev1" / "s1" / "mcap").glob("*.mcap"))
    payload = {"type": "takeback", "id": "tb1", "from": 1000.5, "to": 1010.0, "action": "delete"}
    m = messages.encode_json("event", "dev1", "s1", 0, 1003.0, payload)
    assert ing.handle("crowdcap/v1/dev1/event", wire.single_chunk(wire.encode(m))) == "event"
    assert not list((tmp_path / "dev1" / "s1" / "mcap").glob("*.mcap"))
    _send(ing, 5, 1005.0)  # covered by the take-back on arrival: never appended
    _send(ing, 20, 1020.0)  # after it: a new file
    files = list((tmp_path / "dev1" / "s1" / "mcap").glob("*.mcap"))
    assert len(files) == 1
    stamps = {r.log_time for r in _messages(files[0])}
    assert stamps == {int(1020.0 * 1e9)}
    assert json.loads((tmp_path / "dev1" / "s1" / "frames.jsonl").read_text().splitlines()[0])["seq"] == 0
