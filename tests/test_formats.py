"""3D and dataset conventions other tools rely on: glTF Y-up, Open3D-readable camera.json, TUM depth
scale 5000, estimates in trajectory.txt (ground truth only in groundtruth.txt), the device's keyframes,
a demo room inside the depth range."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from capture import tum
from capture.synthetic import SyntheticSource
from capture.tum import TumWriter
from depth.config import DepthConfig
from depth.fusion import downscale_keyframe, fuse_keyframes, save_mesh
from device.cli import main


@pytest.fixture(scope="module")
def synthetic_frames() -> list:  # type: ignore[type-arg]
    src = SyntheticSource(pace="fast", n_frames=24)
    src.open()
    return [f.replace(t_utc=1000.0 + f.seq / 30) for f in iter(src.read, None)]


def _record(out: Path, frames: list, estimate_offset: float = 0.0, keyframes: set[int] | None = None) -> Path:  # type: ignore[type-arg]
    writer = TumWriter(out)
    for f in frames:
        est = f.attachments["truth"]["pose"].copy()
        est[0, 3] += estimate_offset  # a (wrong) estimate: must not pass for ground truth
        writer.append(f.replace(pose=est, keyframe=keyframes is not None and f.seq in keyframes))
    writer.close()
    return out


def test_camera_json_is_read_by_open3d_and_by_us(synthetic_frames, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = _record(tmp_path / "s", synthetic_frames[:2])
    cam = o3d.io.read_pinhole_camera_intrinsic(str(out / "camera.json"))
    intr = synthetic_frames[0].intrinsics
    assert (cam.width, cam.height) == (intr.width, intr.height)
    assert np.allclose(cam.intrinsic_matrix, intr.matrix())  # not Open3D's fallback fx = 1
    ours, scale = tum.read_camera_json(out / "camera.json")
    assert ours == intr and scale == 5000.0


def test_depth_is_written_at_tum_scale_and_read_right_by_open3d(synthetic_frames, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = synthetic_frames[0]
    assert f.depth_scale == 1000.0  # the source is in millimetres: the writer must convert
    out = _record(tmp_path / "s", [f])
    color = o3d.io.read_image(str(next((out / "rgb").iterdir())))
    depth = o3d.io.read_image(str(next((out / "depth").iterdir())))
    rgbd = o3d.geometry.RGBDImage.create_from_tum_format(color, depth, convert_rgb_to_intensity=False)
    metres = np.asarray(rgbd.depth)  # Open3D's TUM convention: PNG / 5000 (and it cuts at 4 m)
    truth = f.depth.astype(np.float64) / 1000.0
    near = (f.depth > 0) & (truth < 3.9)
    assert near.mean() > 0.2
    assert np.abs(metres[near] - truth[near]).max() < 1e-4
    assert np.all(metres[f.depth == 0] == 0)
    # and replaying our own recording gives the same metres
    assert (tum.read_camera_json(out / "camera.json")[1]) == 5000.0


def test_out_of_range_depth_becomes_no_data_not_a_wrong_distance() -> None:
    d = np.array([[0, 1000, 13107, 13108, 65535]], np.uint16)  # mm
    assert tum.to_tum_depth(d, 1000.0).tolist() == [[0, 5000, 65535, 0, 0]]


def test_estimates_go_to_trajectory_truth_to_groundtruth(synthetic_frames, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = _record(tmp_path / "s", synthetic_frames[:5], estimate_offset=0.5)
    t_est, est = tum.read_groundtruth(out / "trajectory.txt")
    t_gt, gt = tum.read_groundtruth(out / "groundtruth.txt")
    assert len(est) == len(gt) == 5
    truth = np.stack([f.attachments["truth"]["pose"] for f in synthetic_frames[:5]])
    assert np.allclose(gt[:, :3, 3], truth[:, :3, 3], atol=1e-5)
    assert np.allclose(est[:, 0, 3], truth[:, 0, 3] + 0.5, atol=1e-5)
    # a frame without ground truth (a real camera) writes no groundtruth.txt at all
    writer = TumWriter(tmp_path / "real")
    f = synthetic_frames[0]
    writer.append(f.replace(pose=np.eye(4), attachments={}))
    writer.close()
    assert (tmp_path / "real" / "trajectory.txt").exists() and not (tmp_path / "real" / "groundtruth.txt").exists()


def _read_glb(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    data = path.read_bytes()
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and total == len(data)
    jlen, jtype = struct.unpack_from("<I4s", data, 12)
    doc = json.loads(data[20:20 + jlen])
    blen, btype = struct.unpack_from("<I4s", data, 20 + jlen)
    assert jtype == b"JSON" and btype == b"BIN\x00"
    blob = data[28 + jlen:28 + jlen + blen]
    prim = doc["meshes"][0]["primitives"][0]
    out = {}
    for name in ("POSITION", "NORMAL"):
        if name not in prim["attributes"]:
            continue
        acc = doc["accessors"][prim["attributes"][name]]
        view = doc["bufferViews"][acc["bufferView"]]
        out[name] = np.frombuffer(blob, "<f4", acc["count"] * 3, view["byteOffset"]).reshape(-1, 3)
    return doc, out


def test_glb_is_y_up_floor_below_ceiling_above(synthetic_frames, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kfs = [downscale_keyframe(f.attachments["truth"]["pose"], f.color, f.depth, f.intrinsics, f.depth_scale, 4, f.seq)
           for f in synthetic_frames[::6]]
    mesh = fuse_keyframes(kfs, voxel_size=0.05, depth_trunc=8.0)
    out = tmp_path / "room.glb"
    save_mesh(mesh, out)
    doc, attr = _read_glb(out)
    pos, nrm = attr["POSITION"], attr["NORMAL"]
    up, down = nrm[:, 1] > 0.9, nrm[:, 1] < -0.9  # glTF: +Y is up
    assert up.sum() > 100 and down.sum() > 100
    floor_y, ceiling_y = np.median(pos[up, 1]), np.median(pos[down, 1])
    assert floor_y == pytest.approx(-1.5, abs=0.1) and ceiling_y == pytest.approx(1.3, abs=0.1)
    # the scene is ahead of the first camera: a glTF camera looks along -Z
    assert np.median(pos[:, 2]) < 0
    assert doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]["max"][1] > 1.0


def test_demo_room_fits_the_depth_range() -> None:
    """The back wall (and everything else) must be inside depth.depth_trunc, or the demo mesh has holes."""
    trunc = DepthConfig().depth_trunc
    src = SyntheticSource(pace="fast", n_frames=300, width=160, height=120, noise=False)
    src.open()
    far = 0.0
    for i in range(0, 300, 15):  # a whole walk cycle, sampled
        _, depth, _ = src.render(i)
        far = max(far, float(depth.max()) / src.depth_scale)
    assert 5.0 < far < trunc, f"farthest surface {far:.2f} m vs depth_trunc {trunc} m"


def test_mesh_uses_the_devices_keyframes(synthetic_frames, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = _record(tmp_path / "s", synthetic_frames, keyframes={0, 11, 23})
    (out / "groundtruth.txt").unlink()  # an ingested session: estimates and keyframes only
    assert main(["mesh", str(out), "-o", str(tmp_path / "m.glb"), "--voxel", "0.05", "--downscale", "4"]) == 0
    err = capsys.readouterr().err
    assert "fusing 3 keyframes" in err and "trajectory.txt" in err and "keyframes.txt" in err
    assert main(["mesh", str(out), "-o", str(tmp_path / "m2.glb"), "--keyframes", "motion", "--voxel", "0.05",
                 "--downscale", "4"]) == 0
    assert "chosen by motion" in capsys.readouterr().err


def test_record_of_the_synthetic_source_writes_truth_and_estimates_apart(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    # --no-redact: this is about poses (a loaded machine's model timeouts would withhold the frames)
    assert main(["record", "--source", "synthetic", "--pace", "fast", "--max-frames", "12", "--seconds", "60",
                 "--no-redact", "--out", str(out), "--state-dir", str(tmp_path / "state")]) == 0
    t_gt, gt = tum.read_groundtruth(out / "groundtruth.txt")  # the synthetic source's exact poses
    t_est, est = tum.read_groundtruth(out / "trajectory.txt")  # the device's odometry
    # (a loaded machine may withhold frames on model timeouts: what was written is what counts)
    assert len(gt) == len(est) >= 2 and np.allclose(t_gt, t_est)
    assert not np.allclose(gt[1:], est[1:], atol=1e-9)  # not the same poses twice
    assert tum.read_camera_json(out / "camera.json")[1] == 5000.0


def test_mesh_texture_flag_writes_a_textured_glb(synthetic_frames, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = _record(tmp_path / "s", synthetic_frames[:12], keyframes={0, 6, 11})
    glb = tmp_path / "t.glb"
    assert main(["mesh", str(out), "-o", str(glb), "--voxel", "0.08", "--downscale", "4", "--texture", "256"]) == 0
    assert "texture:" in capsys.readouterr().err
    doc, attr = _read_glb(glb)
    prim = doc["meshes"][0]["primitives"][0]
    assert "TEXCOORD_0" in prim["attributes"] and doc["images"][0]["mimeType"] == "image/png"
    assert np.median(attr["POSITION"][:, 2]) < 0  # still Y-up glTF (scene ahead = -Z)
    assert main(["mesh", str(out), "-o", str(tmp_path / "t.ply"), "--texture"]) == 2
