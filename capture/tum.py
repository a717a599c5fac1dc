"""The TUM RGB-D dataset layout: read it, write it, and the `camera.json` beside it.

    DIR/rgb.txt, depth.txt          "timestamp path" per line, '#' comments
    DIR/groundtruth.txt (optional)  "timestamp tx ty tz qx qy qz qw" (camera-to-world): *real* ground
                                    truth only (motion capture, or the synthetic source's exact poses)
    DIR/trajectory.txt (optional)   the same format: the device's own pose *estimates* (odometry)
    DIR/keyframes.txt (optional)    the same format: the device's keyframes (a subset of trajectory.txt)
    DIR/rgb/*.png, DIR/depth/*.png  8-bit colour, 16-bit depth (0 = no data)
    DIR/camera.json (optional)      {"width","height","fx","fy","cx","cy","depth_scale","distortion",
                                    "intrinsic_matrix"}: ours and Open3D's PinholeCameraIntrinsic at once
                                    (column-major `intrinsic_matrix`); Open3D's own file is read too

What we write uses TUM's depth scale: 5000 units per metre (`TUM_DEPTH_SCALE`), whatever the camera's
own scale, so Open3D's TUM loader (`create_from_tum_format`) and TUM's tools read our depth right.
camera.json declares the scale as well, and every reader of ours honours it. Frames: docs/frames.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from capture.configcore import InputError
from capture.frame import TUM_DEFAULT_DEPTH_SCALE, TUM_DEFAULT_INTRINSICS, Intrinsics, RGBDFrame

ASSOCIATION_MAX_DT = 0.02  # seconds: TUM's own associate.py default
TUM_DEPTH_SCALE = 5000.0  # units per metre in TUM RGB-D depth PNGs (and in everything we write)


class LayoutError(InputError):
    """A TUM-layout folder or camera.json is unusable; the message names the file."""


def read_camera_json(path: Path) -> tuple[Intrinsics, float]:
    """(intrinsics, depth scale) from camera.json; TUM's defaults when the file does not exist."""
    if not path.exists():
        return TUM_DEFAULT_INTRINSICS, TUM_DEFAULT_DEPTH_SCALE
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LayoutError(f"{path}: not readable JSON ({e})") from None
    except RecursionError:  # hostile or broken file: never a bare RecursionError
        raise LayoutError(f"{path}: not readable JSON (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise LayoutError(f"{path}: expected a JSON object")
    try:
        if {"fx", "fy", "cx", "cy", "width", "height"} <= doc.keys():
            dist = doc.get("distortion") or ()
            if not isinstance(dist, list | tuple):
                raise LayoutError(f"{path}: distortion: expected a list of numbers")
            intr = Intrinsics(_int(doc, "width", path), _int(doc, "height", path), float(doc["fx"]),
                              float(doc["fy"]), float(doc["cx"]), float(doc["cy"]), tuple(dist))
            scale = float(doc.get("depth_scale", TUM_DEFAULT_DEPTH_SCALE))
        elif "intrinsic_matrix" in doc:  # Open3D PinholeCameraIntrinsic: column-major 3×3
            m = doc["intrinsic_matrix"]
            if not isinstance(m, list) or len(m) != 9:
                raise LayoutError(f"{path}: intrinsic_matrix: expected 9 numbers")
            intr = Intrinsics(int(doc["width"]), int(doc["height"]), float(m[0]), float(m[4]), float(m[6]), float(m[7]))
            scale = float(doc.get("depth_scale", 1000.0))
        else:
            raise LayoutError(
                f"{path}: unknown camera schema (expected width, height, fx, fy, cx, cy[, depth_scale, distortion] "
                f"or Open3D's width, height, intrinsic_matrix); keys found: {', '.join(sorted(doc))}"
            )
    except (TypeError, KeyError) as e:
        raise LayoutError(f"{path}: {e}") from None
    except ValueError as e:
        raise LayoutError(f"{path}: {e}") from None
    if not math.isfinite(scale) or scale <= 0:
        raise LayoutError(f"{path}: depth_scale: expected a positive number, got {scale}")
    return intr, scale


def _int(doc: dict[str, Any], key: str, path: Path) -> int:
    v = doc[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise LayoutError(f"{path}: {key}: expected an integer, got {v!r}")
    return v


def camera_doc(intr: Intrinsics, depth_scale: float) -> dict[str, Any]:
    """camera.json's content: our keys plus Open3D's (`width`, `height`, column-major `intrinsic_matrix`),
    so `open3d.io.read_pinhole_camera_intrinsic` reads the same camera we do."""
    return intr.to_dict() | {
        "depth_scale": float(depth_scale),
        "intrinsic_matrix": [intr.fx, 0.0, 0.0, 0.0, intr.fy, 0.0, intr.cx, intr.cy, 1.0],
    }


def write_camera_json(path: Path, intr: Intrinsics, depth_scale: float) -> None:
    path.write_text(json.dumps(camera_doc(intr, depth_scale), indent=2) + "\n")


def to_tum_depth(depth: np.ndarray, depth_scale: float) -> np.ndarray:
    """uint16 depth at `depth_scale` units/m → TUM's 5000 units/m. Depth past 13.1 m (65535 / 5000) does
    not fit and becomes 0 (no data), never a clipped, wrong distance."""
    if float(depth_scale) == TUM_DEPTH_SCALE:
        return depth
    scaled = np.rint(depth.astype(np.float64) * (TUM_DEPTH_SCALE / float(depth_scale)))
    scaled[scaled > 65535] = 0
    return scaled.astype(np.uint16)


def read_list(path: Path) -> tuple[np.ndarray, list[str]]:
    """(timestamps, relative paths) of an rgb.txt / depth.txt."""
    stamps, files = [], []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise LayoutError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise LayoutError(f"{path}: not a text file (byte {e.start} is not UTF-8); expected "
                          "'timestamp filename' lines") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            stamps.append(float(parts[0]))
            files.append(parts[1])
        except (ValueError, IndexError):
            raise LayoutError(f"{path}:{n}: expected 'timestamp filename', got {line[:80]!r}") from None
    return np.asarray(stamps, dtype=np.float64), files


def read_groundtruth(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps N, poses N×4×4 camera-to-world) from groundtruth.txt (or trajectory.txt, keyframes.txt:
    the same format)."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            vals = [float(v) for v in line.split()]
        except ValueError:
            raise LayoutError(f"{path}:{n}: expected 8 numbers") from None
        if len(vals) != 8:
            raise LayoutError(f"{path}:{n}: expected 8 numbers (t tx ty tz qx qy qz qw), got {len(vals)}")
        rows.append(vals)
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
    return arr[:, 0], np.stack([pose_from_tum(r[1:]) for r in arr]) if len(arr) else np.zeros((0, 4, 4))


def associate(a: np.ndarray, b: np.ndarray, max_dt: float = ASSOCIATION_MAX_DT) -> list[tuple[int, int]]:
    """Pairs (i, j) matching stamps a[i]↔b[j] by nearest time within `max_dt`, each used once, in a's order."""
    if len(a) == 0 or len(b) == 0:
        return []
    order = np.argsort(b)
    bs = b[order]
    pos = np.clip(np.searchsorted(bs, a), 1, len(bs) - 1) if len(bs) > 1 else np.zeros(len(a), int)
    left, right = bs[pos - 1] if len(bs) > 1 else bs[pos], bs[pos]
    use_left = np.abs(a - left) <= np.abs(a - right)
    j_sorted = np.where(use_left, pos - 1, pos) if len(bs) > 1 else pos
    dt = np.abs(a - bs[j_sorted])
    pairs, used = [], set()
    for i in np.argsort(dt, kind="stable"):  # closest pairs claim their partner first (as associate.py)
        j = int(order[j_sorted[i]])
        if dt[i] <= max_dt and j not in used:
            used.add(j)
            pairs.append((int(i), j))
    return sorted(pairs)


def pose_from_tum(v: Any) -> np.ndarray:
    tx, ty, tz, qx, qy, qz, qw = v
    n = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw) or 1.0
    x, y, z, w = qx / n, qy / n, qz / n, qw / n
    pose = np.eye(4)
    pose[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    pose[:3, 3] = (tx, ty, tz)
    return pose


def pose_to_tum(pose: np.ndarray) -> list[float]:
    """[tx, ty, tz, qx, qy, qz, qw] of a 4×4 pose."""
    m = pose[:3, :3]
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    return [float(pose[0, 3]), float(pose[1, 3]), float(pose[2, 3]), x, y, z, w]


UNREDACTED_MARKER = "UNREDACTED"


def _json_default(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def _imwrite(path: Path, image: np.ndarray) -> None:
    # cv2.imwrite only returns False (disk full, unwritable): a frame listed without its file is lost
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: cannot write the image (disk full or not writable?)")


class TumWriter:
    """Writes frames into a TUM-layout folder: images, the lists, camera.json, poses.

    Depth is written at TUM's scale (5000/m). The device's pose estimate (`frame.pose`) goes to
    trajectory.txt (and keyframes.txt for keyframes); groundtruth.txt gets only real ground truth
    (`attachments["truth"]["pose"]`: the synthetic source's, or a replayed dataset's).
    Each frame's redaction manifest goes to manifests.jsonl (as the ingest writes it); a frame recorded
    without redaction (`--no-redact`) marks the whole folder: an `UNREDACTED` file at its top and
    `"redacted": false` on its manifest lines.
    Lists are appended and flushed per frame, so a folder cut short by a crash is still readable.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
        (self.dir / "rgb").mkdir(parents=True, exist_ok=True)
        (self.dir / "depth").mkdir(exist_ok=True)
        self._lists: dict[str, Any] = {}
        self._camera_written = False
        self.frames = 0

    def _list(self, name: str, header: str) -> Any:
        fh = self._lists.get(name)
        if fh is None:
            path = self.dir / name
            new = not path.exists()
            fh = self._lists[name] = path.open("a")
            if new:
                fh.write(header)
        return fh

    def append(self, frame: RGBDFrame, *, jpeg: bytes | None = None) -> None:
        """Write one frame (already redacted: callers must never pass raw frames)."""
        if not self._camera_written:
            write_camera_json(self.dir / "camera.json", frame.intrinsics, TUM_DEPTH_SCALE)
            self._camera_written = True
        ts = f"{frame.t_utc:.6f}"
        if jpeg is not None:
            rgb_name = f"rgb/{ts}.jpg"
            (self.dir / rgb_name).write_bytes(jpeg)
        else:
            rgb_name = f"rgb/{ts}.png"
            _imwrite(self.dir / rgb_name, frame.color)
        depth_name = f"depth/{ts}.png"
        _imwrite(self.dir / depth_name, to_tum_depth(frame.depth, frame.depth_scale))
        self._list("rgb.txt", "# color images\n# timestamp filename\n").write(f"{ts} {rgb_name}\n")
        self._list("depth.txt", "# depth maps\n# timestamp filename\n").write(f"{ts} {depth_name}\n")
        header = "# timestamp tx ty tz qx qy qz qw (camera-to-world, m; frames: docs/frames.md)\n"
        if frame.pose is not None:
            line = ts + " " + " ".join(f"{v:.6f}" for v in pose_to_tum(frame.pose)) + "\n"
            self._list("trajectory.txt", "# estimated trajectory (device odometry)\n" + header).write(line)
            if frame.keyframe:
                self._list("keyframes.txt", "# the device's keyframes (estimated poses)\n" + header).write(line)
        truth = frame.attachments.get("truth") if isinstance(frame.attachments, dict) else None
        if isinstance(truth, dict) and truth.get("pose") is not None:
            line = ts + " " + " ".join(f"{v:.6f}" for v in pose_to_tum(np.asarray(truth["pose"]))) + "\n"
            self._list("groundtruth.txt", "# ground truth trajectory\n" + header).write(line)
        if frame.redaction is not None:
            redacted = frame.redaction.get("policy_version") != "disabled"
            if not redacted and not (self.dir / UNREDACTED_MARKER).exists():
                (self.dir / UNREDACTED_MARKER).write_text(
                    "WARNING: this recording was made with --no-redact: its images and depth were NOT redacted.\n"
                    "Treat every frame as raw personal data. Do not share or upload it.\n")
            entry = {"t": frame.t_utc, "seq": frame.seq, "redacted": redacted, "manifest": frame.redaction}
            self._list("manifests.jsonl", "").write(json.dumps(entry, default=_json_default) + "\n")
        for fh in self._lists.values():
            fh.flush()
        self.frames += 1

    def close(self) -> None:
        for fh in self._lists.values():
            fh.close()
        self._lists.clear()
