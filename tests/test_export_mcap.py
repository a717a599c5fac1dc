"""`crowdcap export SESSION --mcap OUT.mcap`: Foxglove's well-known schemas, read back with the `mcap`
library (the reader Foxglove's own tools use)."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader

from capture import tum
from capture.synthetic import SyntheticSource
from capture.tum import TumWriter
from device.cli import main


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, list]:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("rec")
    src = SyntheticSource(pace="fast", n_frames=8, width=160, height=120)
    src.open()
    frames = []
    w = TumWriter(out)
    for f in iter(src.read, None):
        est = f.attachments["truth"]["pose"].copy()
        est[0, 3] += 0.01
        regions = [{"bbox": [20, 30, 50, 70], "class": "face"}] + ([{"bbox": [90, 10, 140, 30], "class": "text"}]
                                                                   if f.seq % 2 else [])
        g = f.replace(t_utc=1000.0 + f.seq / 30, pose=est, keyframe=f.seq in (0, 5),
                      redaction={"policy_version": "p1", "coverage": "detected", "models": [], "regions": regions})
        w.append(g)
        frames.append(g)
    w.close()
    return out, frames


def _read(path: Path) -> tuple[dict[str, str], dict[str, list]]:  # type: ignore[type-arg]
    schemas, msgs = {}, defaultdict(list)
    with path.open("rb") as fh:
        reader = make_reader(fh)
        for schema, channel, message in reader.iter_messages():
            schemas[channel.topic] = schema.name
            assert channel.message_encoding == "json" and schema.encoding == "jsonschema"
            assert json.loads(schema.data)["title"] == schema.name
            msgs[channel.topic].append((message.log_time, json.loads(message.data)))
        summary = reader.get_summary()
    assert summary is not None and summary.statistics.message_count == sum(len(v) for v in msgs.values())
    return schemas, msgs


def test_export_round_trips_with_foxglove_schemas(recording, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root, frames = recording
    out = tmp_path / "s.mcap"
    assert main(["export", str(root), "--mcap", str(out)]) == 0
    assert "messages:" in capsys.readouterr().err
    schemas, msgs = _read(out)
    assert schemas == {
        "/camera/color": "foxglove.CompressedImage", "/camera/depth": "foxglove.RawImage",
        "/camera/calibration": "foxglove.CameraCalibration", "/tf": "foxglove.FrameTransform",
        "/groundtruth/tf": "foxglove.FrameTransform", "/clouds": "foxglove.PointCloud",
        "/redaction/regions": "foxglove.SceneUpdate", "/redaction/manifest": "crowdcap.RedactionManifest"}
    n = len(frames)
    assert all(len(msgs[t]) == n for t in ("/camera/color", "/camera/depth", "/tf", "/redaction/regions"))
    assert len(msgs["/clouds"]) == 2  # the device's two keyframes
    # times are capture times
    assert msgs["/camera/color"][0][0] == int(round(1000.0 * 1e9))
    # depth: metres, lossless against what was recorded
    t0, d = msgs["/camera/depth"][3]
    depth = np.frombuffer(base64.b64decode(d["data"]), "<f4").reshape(d["height"], d["width"])
    assert d["encoding"] == "32FC1" and d["step"] == d["width"] * 4
    assert np.allclose(depth, frames[3].depth / 1000.0, atol=1e-6)
    jpeg = base64.b64decode(msgs["/camera/color"][3][1]["data"])
    assert jpeg[:2] == b"\xff\xd8"
    cal = msgs["/camera/calibration"][0][1]
    assert cal["K"][0] == frames[0].intrinsics.fx and cal["K"][2] == frames[0].intrinsics.cx and len(cal["P"]) == 12
    # the trajectory is the estimate, the ground truth its own transform
    tf = msgs["/tf"][2][1]
    assert tf["parent_frame_id"] == "world" and tf["child_frame_id"] == "camera"
    assert tf["translation"]["x"] == pytest.approx(frames[2].pose[0, 3], abs=1e-5)
    gt = msgs["/groundtruth/tf"][2][1]
    assert gt["translation"]["x"] == pytest.approx(frames[2].attachments["truth"]["pose"][0, 3], abs=1e-5)
    q = tf["rotation"]
    assert np.isclose(q["x"] ** 2 + q["y"] ** 2 + q["z"] ** 2 + q["w"] ** 2, 1.0)
    # clouds: packed x y z + rgba, in the world frame
    c = msgs["/clouds"][0][1]
    assert c["frame_id"] == "world" and c["point_stride"] == 16 and [f["name"] for f in c["fields"]][:3] == ["x", "y", "z"]
    pts = np.frombuffer(base64.b64decode(c["data"]), "<f4").reshape(-1, 4)[:, :3]
    assert len(pts) > 100 and np.all(np.isfinite(pts))
    # redaction regions: one cube per region, placed in front of the camera
    sizes = [len(m["entities"][0]["cubes"]) for _, m in msgs["/redaction/regions"]]
    assert sizes == [len(f.redaction["regions"]) for f in frames]
    cube = msgs["/redaction/regions"][1][1]["entities"][0]["cubes"][0]
    assert cube["pose"]["position"]["z"] > 0.5 and cube["size"]["x"] > 0
    man = msgs["/redaction/manifest"][0][1]
    assert man["redacted"] is True and man["manifest"]["policy_version"] == "p1"


def test_export_refuses_clearly(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["export", str(tmp_path / "nope"), "--mcap", str(tmp_path / "x.mcap")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--mcap", str(tmp_path / "x.bag")]) == 2
    assert "expected a .mcap" in capsys.readouterr().err
    assert not (tmp_path / "x.mcap").exists()


def test_export_of_an_ingested_session_uses_its_clouds(tmp_path: Path) -> None:
    from uplink_helpers import make_frame

    from uplink import messages, wire
    from uplink.backend.ingest import Ingest

    ing = Ingest("mqtt://127.0.0.1:1", tmp_path / "in")
    for s in range(12):
        f = make_frame(s, cloud=(s % 10 == 0)).replace(t_utc=2000.0 + s / 10)
        ing.handle("crowdcap/v1/dev1/frame", wire.single_chunk(wire.encode(
            messages.encode_frame(f, messages.depth_codec("zstd"), 80))))
        if f.attachments.get("cloud"):
            ing.handle("crowdcap/v1/dev1/cloud", wire.single_chunk(wire.encode(messages.encode_cloud(f, f.attachments["cloud"]))))
    ing.sink.finalize_all()
    ses = tmp_path / "in" / "dev1" / "s1"
    assert tum.read_camera_json(ses / "camera.json")[1] == 5000.0
    from uplink.backend.export import export_mcap

    counts = export_mcap(ses, tmp_path / "i.mcap")
    assert counts["/clouds"] == 2 and counts["/camera/color"] == 12 and "/groundtruth/tf" not in counts
    _, msgs = _read(tmp_path / "i.mcap")
    pts = np.frombuffer(base64.b64decode(msgs["/clouds"][0][1]["data"]), "<f4").reshape(-1, 4)
    assert len(pts) == 500  # the device's own cloud, not a re-projection
