"""Take-backs (`privacy redact-last`): unsent frames are re-redacted or dropped in the spool before they
leave, frames still in the pipeline are caught at the uplink, and what was sent is deleted or re-redacted
by the ingest (real mosquitto, real ingest, real files) — through the console command too."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_console_support import make_service, short_dir
from uplink_helpers import IngestThread, make_frame, uplink_cfg, wait_for_frames

from capture.frame import FrameWithheld
from device.control import Controller, Session
from uplink import build_stage, messages, wire
from uplink.backend.sink import read_frames
from uplink.spool import Spool

REGION = [0, 0, 80, 60]


def _spooled(spool: Spool) -> list[tuple[int, wire.Message]]:
    out = []
    for rid in spool.pending_after(0, 1000):
        got = spool.read(rid)
        assert got is not None
        spool.release(rid)
        out.append((rid, wire.decode(got[0])))
    return out


def test_unsent_frames_are_re_redacted_or_dropped_before_they_leave(tmp_path: Path) -> None:
    cfg = uplink_cfg(tmp_path)
    stage = build_stage(cfg, "dev1", "s1")
    now = time.time()
    for i in range(4):  # a minute ago: outside the span, untouched
        stage.apply(make_frame(i).replace(t_utc=now - 60 + i))
    for i in range(4, 8):
        stage.apply(make_frame(i, cloud=(i == 5)).replace(t_utc=now - 2 + 0.1 * i))
    result = stage.take_back(10, REGION)
    assert result["spool_rewritten"] == 4 and result["spool_dropped"] == 1  # 4 frames re-redacted, 1 cloud dropped
    frames = {m.seq: m for _, m in _spooled(stage.spool) if m.type == wire.FRAME}
    events = [m.meta() for _, m in _spooled(stage.spool) if m.type == wire.EVENT]
    assert sorted(frames) == list(range(8))
    for seq, msg in frames.items():
        f = messages.decode_frame(msg)
        color = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
        inside = color[5:55, 5:75]
        if seq >= 4:
            assert inside.max() < 12 and not f.depth[0:60, 0:80].any(), seq
            assert f.manifest["regions"][-1]["class"] == "takeback"
        else:
            assert inside.max() > 100 and f.depth[0:60, 0:80].any()
    assert events[-1]["type"] == "takeback" and events[-1]["action"] == "redact" and events[-1]["region"] == REGION
    # --all: the span is dropped; a frame of the span still in the pipeline is withheld at the uplink
    result = stage.take_back(10, None)
    assert result["spool_dropped"] == 4
    with pytest.raises(FrameWithheld, match="taken_back"):
        stage.apply(make_frame(9).replace(t_utc=time.time() - 0.5))
    assert stage.status()["taken_back_in_pipeline"] == 1
    stage.close()
    # a restart: what was taken back stays gone (the spool's ack log says so)
    spool = Spool(cfg.spool_dir)
    assert sorted(m.seq for _, m in _spooled(spool) if m.type == wire.FRAME) == [0, 1, 2, 3]
    spool.close()


def test_sent_frames_are_deleted_or_re_redacted_by_the_ingest(tmp_path: Path, broker) -> None:
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    stage = build_stage(uplink_cfg(tmp_path, broker.url), "dev1", "s1")
    stage.start()
    now = time.time()
    for i in range(6):
        stage.apply(make_frame(i, cloud=(i == 3)).replace(t_utc=now - 30 + i))
    for i in range(6, 12):
        stage.apply(make_frame(i).replace(t_utc=now - 3 + 0.1 * i))
    assert stage.drain(20)
    wait_for_frames(out, 12, 20)
    ses = out / "dev1" / "s1"
    stage.take_back(40, REGION)  # frames 0-5 (and the cloud) re-redacted at the ingest
    stage.take_back(10, None)  # frames 6-11 deleted
    assert stage.drain(20)
    log_file = out / "dev1" / "takebacks.jsonl"

    def both_honoured() -> bool:
        return log_file.exists() and len(log_file.read_text().splitlines()) == 2 \
            and not (ses / "rgb" / "00000011.jpg").exists()

    deadline = time.monotonic() + 30
    while not both_honoured() and time.monotonic() < deadline:
        time.sleep(0.05)
    ing.stop()
    stage.close()
    assert not any((ses / "rgb" / f"{i:08d}.jpg").exists() or (ses / "depth" / f"{i:08d}.png").exists()
                   for i in range(6, 12))
    for i in range(6):
        color = cv2.imread(str(ses / "rgb" / f"{i:08d}.jpg"))
        depth = cv2.imread(str(ses / "depth" / f"{i:08d}.png"), cv2.IMREAD_UNCHANGED)
        assert color[5:55, 5:75].max() < 12 and not depth[0:60, 0:80].any() and depth[70:, 90:].any()
    assert not (ses / "clouds" / "00000003.ply").exists()
    assert [f["seq"] for f in read_frames(ses)] == list(range(6))
    log = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert sorted(t["action"] for t in log) == ["delete", "redact"]  # the ingest may take them in either order


def test_redact_last_on_the_console(tmp_path: Path) -> None:
    root = short_dir()
    service = make_service(root, stages="config")
    ctl = Controller(service)
    trusted = Session(origin="control", authorized=True)
    service.start()
    try:
        deadline = time.monotonic() + 10
        while service.stages["uplink"].status().get("frames_accepted", 0) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        console = Session(origin="console")
        assert not ctl.execute(["privacy", "redact-last", "5", "--all"], console).ok  # needs login
        bad = ctl.execute(["privacy", "redact-last", "5", "--region", "9,9,1,1"], trusted)
        assert not bad.ok and "x1 < x2" in bad.data["error"]
        reply = ctl.execute(["privacy", "redact-last", "30", "--all"], trusted)
        assert reply.ok, reply.data
        assert reply.data["taken_back"]["spool_dropped"] >= 5 and "dropped" in reply.text
        listing = ctl.execute(["privacy", "list"], trusted)
        assert listing.ok and listing.data["objects"] == [] and listing.data["zones"] == []
    finally:
        service.close()
