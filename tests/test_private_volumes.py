"""World-anchored privacy volumes on synthetic trajectories with ground truth, through the real
redaction stage (CenterFace + the wearer's layer) and the real depth stage: no pixel, depth value,
cloud point or mesh vertex of the volume's content leaves, from any viewpoint, across a session
restart (relocalised against the stored keyframes); a lost pose near the volume withholds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import redact
from capture.frame import FrameWithheld, RGBDFrame
from capture.synthetic import SyntheticSource
from depth.config import DepthConfig
from depth.stage import DepthStage
from redact.config import RedactConfig
from redact.private.config import PrivacyConfig
from redact.private.layer import PrivateLayer, touch_changed
from redact.private.volumes import Volume, VolumeStore

W, H = 320, 240
BOX_LO, BOX_HI = np.array([1.1, 0.9, 2.2]), np.array([1.7, 1.5, 2.8])  # the first box on the floor (capture/scene.py)


@pytest.fixture(scope="module")
def world() -> tuple[SyntheticSource, list[int]]:
    src = SyntheticSource(width=W, height=H, pace="fast")
    src.open()
    assert src._renderer is not None
    box_quads = [i for i, q in enumerate(src._renderer.quads)
                 if np.all((q.corners() >= BOX_LO - 0.01) & (q.corners() <= BOX_HI + 0.01))]
    assert len(box_quads) == 4
    return src, box_quads


def _frame(src: SyntheticSource, box_quads: list[int], i: int, session: str) -> tuple[RGBDFrame, np.ndarray]:
    color, depth, truth = src.render(i)
    assert src._renderer is not None
    _, _, ids = src._renderer.render(truth["pose"])
    frame = RGBDFrame("dev", session, i, i * 33_000_000, 1000.0 + i / 30, color, depth, 1000.0, src.intrinsics,
                      attachments={"truth": truth})
    return frame, np.isin(ids, box_quads)


def _stage(state: Path, **privacy: object) -> redact.RedactStage:
    return redact.build_stage(RedactConfig(budget_ms=5000.0), private=PrivateLayer.load(state, PrivacyConfig(**privacy)))


def _inside_box(points_world: np.ndarray, grow: float = 0.01) -> np.ndarray:
    return np.all((points_world >= BOX_LO - grow) & (points_world <= BOX_HI + grow), axis=1)


def _run(stage: redact.RedactStage, depth_stage: DepthStage, world: tuple, frames: range,
         session: str) -> dict[str, int]:
    src, box_quads = world
    seen = {"frames": 0, "withheld": 0, "content_frames": 0, "leaked_pixels": 0, "leaked_points": 0}
    for i in frames:
        frame, content = _frame(src, box_quads, i, session)
        seen["frames"] += 1
        try:
            out = depth_stage.apply(stage.apply(frame))
        except FrameWithheld:
            seen["withheld"] += 1
            continue
        seen["content_frames"] += bool(content.any())
        seen["leaked_pixels"] += int(np.count_nonzero(content & (out.color.any(axis=2) | (out.depth > 0))))
        cloud = out.attachments.get("cloud")
        if cloud is not None:
            pose = frame.attachments["truth"]["pose"]
            pts = cloud["points"].astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
            seen["leaked_points"] += int(np.count_nonzero(_inside_box(pts)))
    return seen


@pytest.mark.slow
def test_no_content_of_a_volume_leaves_from_any_viewpoint_across_a_restart(world: tuple, tmp_path: Path) -> None:
    state = tmp_path / "state"
    src, box_quads = world
    # session 1: the wearer marks a volume "in front of me" (anchors a new place at this frame) ...
    stage = _stage(state)
    layer = stage.private
    done, result = layer.request_mark("scratch", [0.4, 0.4, 0.4], 1.5)
    first, _ = _frame(src, box_quads, 0, "s1")
    stage.apply(first)
    assert done.is_set() and "volume" in result, result
    place = result["volume"]["place"]
    # ... then the test replaces it by the ground-truth box (+5 cm), in the same place's coordinates
    VolumeStore(state).remove("scratch")
    VolumeStore(state).add(Volume("toybox", place, (BOX_LO + BOX_HI) / 2, np.eye(3), BOX_HI - BOX_LO + 0.1))
    touch_changed(state)
    layer.reload()
    depth1 = DepthStage(DepthConfig(cloud_max_points=4000))
    s1 = _run(stage, depth1, world, range(1, 150, 2), "s1")
    assert s1["leaked_pixels"] == 0 and s1["leaked_points"] == 0, s1
    assert s1["content_frames"] >= 50 and s1["withheld"] == 0, s1
    status = stage.status()["private"]
    assert status["matches"][layer.volumes[0].name_hash] >= 50 and status["pose"]["ok"]
    mesh = depth1.fuse()
    verts = np.asarray(mesh.vertices)
    assert len(verts) > 1000 and not _inside_box(verts).any()  # mesh in the place's coordinates (= truth)
    stage.close()  # keyframes of the place saved

    # session 2, a fresh process' worth of state: starts elsewhere on the walk, relocalises, redacts
    stage2 = _stage(state)
    depth2 = DepthStage(DepthConfig(cloud_max_points=4000))
    s2 = _run(stage2, depth2, world, range(310, 420, 2), "s2")
    assert s2["leaked_pixels"] == 0 and s2["leaked_points"] == 0, s2
    assert s2["content_frames"] >= 30, s2
    assert stage2.status()["private"]["pose"]["relocalised"] >= 1
    # the second session's mesh, placed in the world by its first frame's true pose (its odometry origin)
    first = _frame(src, box_quads, 310, "s2")[0].attachments["truth"]["pose"]
    verts2 = np.asarray(depth2.fuse().vertices) @ first[:3, :3].T + first[:3, 3]
    assert len(verts2) > 1000 and not _inside_box(verts2).any()
    stage2.close()


def test_lost_pose_near_a_volume_withholds(world: tuple, tmp_path: Path) -> None:
    state = tmp_path / "state"
    src, box_quads = world
    layer = PrivateLayer.load(state, PrivacyConfig(volume_hold_frames=3))
    done, result = layer.request_mark("desk", [1.0, 1.0, 1.0], 1.5)
    frame, _ = _frame(src, box_quads, 0, "s1")
    layer.apply(frame, frame.color, frame.depth)
    assert "volume" in result
    for i in range(1, 6):  # tracking fine
        frame, _ = _frame(src, box_quads, i, "s1")
        layer.apply(frame, frame.color, frame.depth)
    outcomes = []
    for i in range(6, 14):  # the lens is covered: nothing to track, the pose is only predicted
        frame, _ = _frame(src, box_quads, i, "s1")
        frame = frame.replace(color=np.full_like(frame.color, 40), depth=np.zeros_like(frame.depth))
        try:
            _, _, regions = layer.apply(frame, frame.color, frame.depth)
            outcomes.append(regions[0]["source"] if regions else "none")
        except FrameWithheld as e:
            outcomes.append(e.reason)
    # held with a growing margin for volume_hold_frames frames, then withheld (fail closed)
    assert outcomes[:3] == ["predicted"] * 3 and set(outcomes[4:]) == {"private_pose_lost"}, outcomes
    assert layer.status()["withheld"]["private_pose_lost"] >= 4


def test_a_new_session_relocalises_from_colour_alone_or_withholds_when_told(world: tuple, tmp_path: Path) -> None:
    state = tmp_path / "state"
    src, box_quads = world
    layer = PrivateLayer.load(state, PrivacyConfig())
    done, result = layer.request_mark("desk", [1.0, 1.0, 1.0], 1.5)
    for i in range(0, 40, 4):
        frame, _ = _frame(src, box_quads, i, "s1")
        layer.apply(frame, frame.color, frame.depth)
    layer.close()
    # a new session whose first frame has colour but no depth: relocalised against the stored keyframes
    # (2D-3D), and with no depth to clip by, the volume's whole silhouette is redacted
    layer2 = PrivateLayer.load(state, PrivacyConfig())
    frame, _ = _frame(src, box_quads, 2, "s2")
    _, out_d, regions = layer2.apply(frame, frame.color, np.zeros_like(frame.depth))
    assert layer2.status()["pose"]["relocalised"] == 1 and regions and regions[0]["class"] == "private_volume"
    # somewhere else entirely: passes by default, withheld with unlocalised = "withhold"
    other = frame.replace(color=np.random.default_rng(0).integers(0, 255, frame.color.shape, np.uint8),
                          session_id="s3")
    layer2.reset()
    assert layer2.apply(other, other.color, other.depth)[2] == []
    strict = PrivateLayer.load(state, PrivacyConfig(unlocalised="withhold"))
    with pytest.raises(FrameWithheld, match="private_pose_lost"):
        strict.apply(other, other.color, other.depth)


def test_add_volume_from_a_recorded_session(world: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`crowdcap privacy add-volume SESSION`: a box in a recorded session's coordinates (its poses, as an
    ingest session's groundtruth.txt has them); a later session relocalises and the content is gone."""
    import json

    from capture.tum import TumWriter
    from device.cli import main

    src, box_quads = world
    rec = tmp_path / "session"
    writer = TumWriter(rec)
    for i in range(0, 60, 3):
        frame, _ = _frame(src, box_quads, i, "rec")
        writer.append(frame.replace(pose=frame.attachments["truth"]["pose"], redaction={"regions": []}))
    writer.close()
    state = tmp_path / "state"
    centre = [str(v) for v in (BOX_LO + BOX_HI) / 2]
    size = [str(v) for v in BOX_HI - BOX_LO + 0.1]
    assert main(["privacy", "--state-dir", str(state), "--json", "add-volume", str(rec), "--name", "toybox",
                 "--centre", *centre, "--box", *size]) == 0
    added = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert added["keyframes"] >= 2 and added["name"] == "toybox"
    assert main(["privacy", "--state-dir", str(state), "add-volume", str(tmp_path / "nope"), "--name", "x",
                 "--centre", "0", "0", "1", "--box", "1", "1", "1"]) == 2
    assert main(["privacy", "--state-dir", str(state), "add-volume", str(rec), "--name", "y",
                 "--centre", "0", "0", "1", "--box", "1", "-1", "1"]) == 2
    layer = PrivateLayer.load(state, PrivacyConfig())
    leaked = content_frames = 0
    for i in range(200, 260, 4):
        frame, content = _frame(src, box_quads, i, "later")
        try:
            color, depth, _ = layer.apply(frame, frame.color, frame.depth)
        except FrameWithheld:
            continue
        content_frames += bool(content.any())
        leaked += int(np.count_nonzero(content & (color.any(axis=2) | (depth > 0))))
    assert leaked == 0 and content_frames >= 5 and layer.status()["pose"]["relocalised"] >= 1


def test_a_frame_that_looks_like_the_place_but_cannot_be_placed_is_withheld(world: tuple, tmp_path: Path) -> None:
    """The place's stored map no longer fits the world (here: its 3D points shuffled, as after a
    rearranged room): frames match its descriptors but PnP finds no pose — withheld, never passed."""
    from redact.private.places import Place, places_dir

    state = tmp_path / "state"
    src, box_quads = world
    layer = PrivateLayer.load(state, PrivacyConfig())
    layer.request_mark("desk", [1.0, 1.0, 1.0], 1.5)
    for i in range(0, 40, 4):
        frame, _ = _frame(src, box_quads, i, "s1")
        layer.apply(frame, frame.color, frame.depth)
    layer.close()
    path = next(places_dir(state).glob("*.npz"))
    place = Place.load(path)
    rng = np.random.default_rng(0)
    for kf in place.keyframes:
        kf.world = kf.world[rng.permutation(len(kf.world))]
    place.save(places_dir(state))
    layer2 = PrivateLayer.load(state, PrivacyConfig())
    frame, _ = _frame(src, box_quads, 2, "s2")
    with pytest.raises(FrameWithheld, match="private_pose_lost"):
        layer2.apply(frame, frame.color, frame.depth)
    assert layer2.status()["withheld"]["private_pose_lost"] == 1
