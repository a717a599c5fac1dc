"""`crowdcap cloud`, `crowdcap mesh`, `crowdcap eval-odometry` on a real TUM-layout folder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest

from capture.synthetic import SyntheticSource
from capture.tum import TumWriter
from device.cli import main


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("session")
    src = SyntheticSource(pace="fast", n_frames=30)
    src.open()
    writer = TumWriter(out)
    for f in iter(src.read, None):
        writer.append(f.replace(pose=f.attachments["truth"]["pose"], t_utc=1000.0 + f.seq / 30))
    writer.close()
    return out


def first_pair(session: Path) -> tuple[Path, Path]:
    return sorted((session / "rgb").iterdir())[0], sorted((session / "depth").iterdir())[0]


def test_cloud_writes_ply(session: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    color, depth = first_pair(session)
    out = tmp_path / "c.ply"
    assert main(["cloud", str(color), str(depth), "--camera", str(session / "camera.json"), "-o", str(out)]) == 0
    pc = o3d.io.read_point_cloud(str(out))
    d = cv2.imread(str(depth), cv2.IMREAD_UNCHANGED)
    assert len(pc.points) == np.count_nonzero((d > 0) & (d < 5 * 5000)) and pc.has_colors()  # TUM scale


def test_cloud_errors_are_clear(session: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    color, depth = first_pair(session)
    bad_camera = tmp_path / "camera.json"
    bad_camera.write_text('{"width": 640, "height": 480, "fx": "wide"}')
    assert main(["cloud", str(color), str(depth), "--camera", str(bad_camera), "-o", str(tmp_path / "x.ply")]) == 2
    assert "camera.json" in capsys.readouterr().err
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.imread(str(depth), cv2.IMREAD_UNCHANGED)[::2, ::2])
    assert main(["cloud", str(color), str(small), "--camera", str(session / "camera.json"), "-o",
                 str(tmp_path / "x.ply")]) == 2
    assert "320×240" in capsys.readouterr().err
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((480, 640), np.uint16))
    assert main(["cloud", str(color), str(empty), "--camera", str(session / "camera.json"), "-o",
                 str(tmp_path / "x.ply")]) == 2
    assert "no valid depth" in capsys.readouterr().err
    assert main(["cloud", str(color), str(tmp_path / "missing.png"), "-o", str(tmp_path / "x.ply")]) == 2
    assert "missing.png: file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.ply").exists()


def test_mesh_from_session(session: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "m.glb"
    assert main(["mesh", str(session), "-o", str(out), "--voxel", "0.03"]) == 0
    err = capsys.readouterr().err
    assert "keyframes" in err and "triangles" in err
    assert out.read_bytes()[:4] == b"glTF"
    mesh = o3d.io.read_triangle_mesh(str(out))
    assert len(mesh.triangles) > 1000


def test_mesh_errors(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["mesh", str(tmp_path / "nope"), "-o", str(tmp_path / "m.glb")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["mesh", str(tmp_path), "-o", str(tmp_path / "m.stl")]) == 2
    assert ".glb" in capsys.readouterr().err


def test_eval_odometry_json(session: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["eval-odometry", str(session)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == report["scored_frames"] == 30
    assert report["ate_rmse_m"] < 0.02
    assert report["rpe"]["trans_rmse_m"] < 0.01
    assert report["ms_per_frame"]["median"] > 0


def test_eval_odometry_needs_groundtruth(session: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import shutil

    copy = tmp_path / "nogt"
    shutil.copytree(session, copy)
    (copy / "groundtruth.txt").unlink()
    assert main(["eval-odometry", str(copy)]) == 2
    assert "groundtruth.txt" in capsys.readouterr().err


def test_cloud_accepts_open3d_camera_json(session: Path, tmp_path: Path) -> None:
    color, depth = first_pair(session)
    cam = json.loads((session / "camera.json").read_text())
    o3d_cam = tmp_path / "o3d.json"
    o3d_cam.write_text(json.dumps({"width": 640, "height": 480, "depth_scale": cam["depth_scale"],
                                   "intrinsic_matrix": [cam["fx"], 0, 0, 0, cam["fy"], 0, cam["cx"], cam["cy"], 1]}))
    a, b = tmp_path / "a.ply", tmp_path / "b.ply"
    assert main(["cloud", str(color), str(depth), "--camera", str(o3d_cam), "-o", str(a)]) == 0
    assert main(["cloud", str(color), str(depth), "--camera", str(session / "camera.json"), "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_eval_odometry_side_by_side_with_open3d(session: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["eval-odometry", str(session), "--max-frames", "4", "--open3d"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["open3d_hybrid"]["frames"] == 4 and report["open3d_hybrid"]["ate_rmse_m"] < 0.05
    assert report["ours_on_same_frames"]["scored_frames"] == 4


def test_mesh_without_groundtruth_uses_odometry(session: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import shutil

    copy = tmp_path / "nogt"
    shutil.copytree(session, copy)
    (copy / "groundtruth.txt").unlink()
    (copy / "trajectory.txt").unlink()
    out = tmp_path / "m.ply"
    assert main(["mesh", str(copy), "-o", str(out), "--voxel", "0.04"]) == 0
    assert "poses from our odometry" in capsys.readouterr().err
    assert len(o3d.io.read_triangle_mesh(str(out)).triangles) > 1000
    assert main(["mesh", str(copy), "-o", str(out), "--poses", "groundtruth"]) == 2
    assert "no groundtruth.txt" in capsys.readouterr().err


def test_mesh_with_a_broken_image_is_a_clear_error(session: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import shutil

    copy = tmp_path / "broken"
    shutil.copytree(session, copy)
    victim = sorted((copy / "depth").iterdir())[3]
    victim.write_bytes(b"not a png")
    assert main(["mesh", str(copy), "-o", str(tmp_path / "m.glb")]) == 2
    assert victim.name in capsys.readouterr().err
