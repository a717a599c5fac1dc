"""`crowdcap export SESSION --mcap OUT.mcap`: a session folder (a recording or an ingested session) as an
MCAP file that Foxglove opens natively: JSON messages with Foxglove's well-known schema names.

    /camera/color        foxglove.CompressedImage   the redacted colour JPEG/PNG (frame "camera")
    /camera/depth        foxglove.RawImage          depth, 32FC1 metres (REP 118), 0 = no data
    /camera/calibration  foxglove.CameraCalibration K, P, plumb_bob D, per frame
    /tf                  foxglove.FrameTransform    world → camera: the device's pose estimate per frame
    /groundtruth/tf      foxglove.FrameTransform    world → camera_truth, when groundtruth.txt exists
    /clouds              foxglove.PointCloud        keyframe clouds, in "world" (x y z float32, rgba)
    /redaction/regions   foxglove.SceneUpdate       one cube per redacted region, in "camera", at the depth
                                                    around the region (the region's own depth is redacted)
    /redaction/manifest  crowdcap.RedactionManifest the frame's manifest as the device wrote it

Times are the capture times (UTC). Frames: docs/frames.md (world and camera are OpenCV-style; Foxglove's
camera frames are the same: +x right, +y down, +z forward). The file is written append-only by the
`mcap` library with chunk compression off (readable without extra codecs) and a summary at the end.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from capture import tum

_TIME = {"type": "object", "title": "time",
         "properties": {"sec": {"type": "integer", "minimum": 0}, "nsec": {"type": "integer", "minimum": 0}}}
_NUM = {"type": "number"}
_VEC3 = {"type": "object", "title": "foxglove.Vector3", "properties": {"x": _NUM, "y": _NUM, "z": _NUM}}
_QUAT = {"type": "object", "title": "foxglove.Quaternion", "properties": {"x": _NUM, "y": _NUM, "z": _NUM, "w": _NUM}}
_POSE = {"type": "object", "title": "foxglove.Pose", "properties": {"position": _VEC3, "orientation": _QUAT}}
_COLOR = {"type": "object", "title": "foxglove.Color", "properties": {"r": _NUM, "g": _NUM, "b": _NUM, "a": _NUM}}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_B64 = {"type": "string", "contentEncoding": "base64"}
_NUMS = {"type": "array", "items": _NUM}


def _schema(title: str, props: dict[str, Any]) -> bytes:
    return json.dumps({"title": title, "type": "object", "properties": props}).encode()


SCHEMAS = {
    "foxglove.CompressedImage": _schema("foxglove.CompressedImage", {
        "timestamp": _TIME, "frame_id": _STR, "data": _B64, "format": _STR}),
    "foxglove.RawImage": _schema("foxglove.RawImage", {
        "timestamp": _TIME, "frame_id": _STR, "width": _INT, "height": _INT, "encoding": _STR, "step": _INT,
        "data": _B64}),
    "foxglove.CameraCalibration": _schema("foxglove.CameraCalibration", {
        "timestamp": _TIME, "frame_id": _STR, "width": _INT, "height": _INT, "distortion_model": _STR,
        "D": _NUMS, "K": _NUMS, "R": _NUMS, "P": _NUMS}),
    "foxglove.FrameTransform": _schema("foxglove.FrameTransform", {
        "timestamp": _TIME, "parent_frame_id": _STR, "child_frame_id": _STR, "translation": _VEC3,
        "rotation": _QUAT}),
    "foxglove.PointCloud": _schema("foxglove.PointCloud", {
        "timestamp": _TIME, "frame_id": _STR, "pose": _POSE, "point_stride": _INT,
        "fields": {"type": "array", "items": {"type": "object", "title": "foxglove.PackedElementField",
                                              "properties": {"name": _STR, "offset": _INT, "type": _INT}}},
        "data": _B64}),
    "foxglove.SceneUpdate": _schema("foxglove.SceneUpdate", {
        "deletions": {"type": "array", "items": {"type": "object"}},
        "entities": {"type": "array", "items": {"type": "object", "title": "foxglove.SceneEntity", "properties": {
            "timestamp": _TIME, "frame_id": _STR, "id": _STR, "frame_locked": {"type": "boolean"},
            "lifetime": {"type": "object", "title": "duration", "properties": {"sec": _INT, "nsec": _INT}},
            "metadata": {"type": "array", "items": {"type": "object", "properties": {"key": _STR, "value": _STR}}},
            "cubes": {"type": "array", "items": {"type": "object", "title": "foxglove.CubePrimitive",
                                                 "properties": {"pose": _POSE, "size": _VEC3, "color": _COLOR}}},
        }}}}),
    "crowdcap.RedactionManifest": _schema("crowdcap.RedactionManifest", {
        "timestamp": _TIME, "redacted": {"type": "boolean"}, "manifest": {"type": "object"}}),
}
_FLOAT32, _UINT8 = 7, 1
REGION_COLORS = {"face": (1.0, 0.2, 0.2), "text": (1.0, 0.7, 0.0), "person": (0.3, 0.5, 1.0)}


def _stamp(t: float) -> dict[str, int]:
    ns = max(0, int(round(t * 1e9)))
    return {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}


def _quat(pose: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    tx, ty, tz, qx, qy, qz, qw = tum.pose_to_tum(pose)
    return {"x": tx, "y": ty, "z": tz}, {"x": qx, "y": qy, "z": qz, "w": qw}


def _nearest(stamps: np.ndarray, values: list[Any], t: float) -> Any:
    if len(stamps) == 0:
        return None
    j = int(np.argmin(np.abs(stamps - t)))
    return values[j] if abs(stamps[j] - t) <= tum.ASSOCIATION_MAX_DT else None


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    if path.is_file():
        for ln in path.read_text(errors="replace").splitlines():
            try:
                e = json.loads(ln)
            except ValueError:
                continue
            if isinstance(e, dict):
                out.append(e)
    return out


class _Out:
    def __init__(self, writer: Any) -> None:
        self.w = writer
        self.schemas: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def put(self, topic: str, schema: str, t: float, msg: dict[str, Any]) -> None:
        if topic not in self.channels:
            if schema not in self.schemas:
                self.schemas[schema] = self.w.register_schema(name=schema, encoding="jsonschema", data=SCHEMAS[schema])
            self.channels[topic] = self.w.register_channel(topic=topic, message_encoding="json",
                                                           schema_id=self.schemas[schema])
        ns = max(0, int(round(t * 1e9)))
        self.counts[topic] = self.counts.get(topic, 0) + 1
        self.w.add_message(channel_id=self.channels[topic], log_time=ns, publish_time=ns,
                           data=json.dumps(msg, separators=(",", ":")).encode(), sequence=self.counts[topic])


def export_mcap(session: str | Path, out_path: str | Path) -> dict[str, int]:
    """Write `session` (a TUM-layout folder of ours) to `out_path`; returns messages per topic."""
    from mcap.writer import CompressionType, Writer

    from capture.replay import ReplaySource

    root = Path(session)
    src = ReplaySource(root, pace="fast")  # LayoutError (a ValueError) names what is missing
    intr, scale = src.intrinsics, src.depth_scale
    traj = tum.read_groundtruth(root / "trajectory.txt") if (root / "trajectory.txt").is_file() else None
    keys = tum.read_groundtruth(root / "keyframes.txt")[0] if (root / "keyframes.txt").is_file() else np.zeros(0)
    manifests = _read_jsonl(root / "manifests.jsonl")
    m_stamps = np.array([float(m.get("t", -1)) for m in manifests])
    seq_by_t = {round(float(f["t"]), 6): f["seq"] for f in _read_jsonl(root / "frames.jsonl") if "t" in f and "seq" in f}
    clouds_dir = root / "clouds"
    K = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    calib = {"frame_id": "camera", "width": intr.width, "height": intr.height, "distortion_model": "plumb_bob",
             "D": [float(v) for v in (list(intr.distortion) + [0.0] * 5)[:5]], "K": K,
             "R": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], "P": [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0,
                                                         0.0, 0.0, 1.0, 0.0]}
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with tmp.open("wb") as fh:
        writer = Writer(fh, compression=CompressionType.NONE)
        writer.start(profile="", library="crowdcap")
        out = _Out(writer)
        src.open()
        try:
            while (f := src.read()) is not None:
                t = f.t_utc
                ok, jpg = cv2.imencode(".jpg", f.color, [cv2.IMWRITE_JPEG_QUALITY, 90])
                out.put("/camera/color", "foxglove.CompressedImage", t, {
                    "timestamp": _stamp(t), "frame_id": "camera", "format": "jpeg",
                    "data": base64.b64encode(jpg.tobytes()).decode()})
                metres = (f.depth.astype(np.float32) / np.float32(scale)).astype("<f4")
                out.put("/camera/depth", "foxglove.RawImage", t, {
                    "timestamp": _stamp(t), "frame_id": "camera", "width": intr.width, "height": intr.height,
                    "encoding": "32FC1", "step": intr.width * 4, "data": base64.b64encode(metres.tobytes()).decode()})
                out.put("/camera/calibration", "foxglove.CameraCalibration", t, {"timestamp": _stamp(t), **calib})
                pose = _nearest(traj[0], list(traj[1]), t) if traj is not None else None
                if pose is not None:
                    tr, rot = _quat(pose)
                    out.put("/tf", "foxglove.FrameTransform", t, {
                        "timestamp": _stamp(t), "parent_frame_id": "world", "child_frame_id": "camera",
                        "translation": tr, "rotation": rot})
                truth = (f.attachments.get("truth") or {}).get("pose")
                if truth is not None:
                    tr, rot = _quat(np.asarray(truth))
                    out.put("/groundtruth/tf", "foxglove.FrameTransform", t, {
                        "timestamp": _stamp(t), "parent_frame_id": "world", "child_frame_id": "camera_truth",
                        "translation": tr, "rotation": rot})
                manifest = _nearest(m_stamps, manifests, t)
                if manifest is not None:
                    _regions(out, t, manifest, f.depth, intr, scale)
                if pose is not None and (len(keys) and np.min(np.abs(keys - t)) <= tum.ASSOCIATION_MAX_DT):
                    _cloud(out, t, f, pose, clouds_dir, seq_by_t.get(round(t, 6)))
        finally:
            src.close()
        writer.finish()
    tmp.replace(out_path)
    return dict(out.counts)


def _regions(out: _Out, t: float, entry: dict, depth: np.ndarray, intr: Any, scale: float) -> None:
    m = entry.get("manifest") if isinstance(entry.get("manifest"), dict) else {}
    redacted = entry.get("redacted", m.get("policy_version") != "disabled")
    out.put("/redaction/manifest", "crowdcap.RedactionManifest", t,
            {"timestamp": _stamp(t), "redacted": bool(redacted), "manifest": m})
    cubes = []
    h, w = depth.shape
    for r in m.get("regions") or []:
        box = r.get("bbox") if isinstance(r, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)):
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        # the region's own depth is zeroed by redaction: take the depth around it (a ring of 8 px)
        ring = depth[max(0, int(y1) - 8):min(h, int(y2) + 8), max(0, int(x1) - 8):min(w, int(x2) + 8)]
        valid = ring[ring > 0]
        z = float(np.median(valid)) / scale if valid.size else 1.0
        if not math.isfinite(z) or z <= 0:
            z = 1.0
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        rgb = REGION_COLORS.get(str(r.get("class")), (0.8, 0.2, 0.8))
        cubes.append({"pose": {"position": {"x": (cx - intr.cx) * z / intr.fx, "y": (cy - intr.cy) * z / intr.fy,
                                            "z": z}, "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}},
                      "size": {"x": (x2 - x1) * z / intr.fx, "y": (y2 - y1) * z / intr.fy, "z": 0.05},
                      "color": {"r": rgb[0], "g": rgb[1], "b": rgb[2], "a": 0.5}})
    out.put("/redaction/regions", "foxglove.SceneUpdate", t, {"deletions": [], "entities": [{
        "timestamp": _stamp(t), "frame_id": "camera", "id": "redactions", "frame_locked": True,
        "lifetime": {"sec": 0, "nsec": 0},
        "metadata": [{"key": "classes", "value": ",".join(sorted({str(r.get("class")) for r in m.get("regions") or []
                                                                  if isinstance(r, dict)}))}],
        "cubes": cubes}]})


def _cloud(out: _Out, t: float, f: Any, pose: np.ndarray, clouds_dir: Path, seq: int | None) -> None:
    pts = cols = None
    if seq is not None and (clouds_dir / f"{seq:08d}.ply").is_file():
        from uplink.backend.preview import read_ply

        try:
            pts, cols = read_ply(clouds_dir / f"{seq:08d}.ply")
        except ValueError:
            pts = None
    if pts is None:  # a recording: back-project the keyframe (every 4th pixel)
        from depth.cloud import back_project

        c = back_project(f.depth, f.intrinsics, f.depth_scale, f.color, depth_trunc=8.0, stride=4)
        pts, cols = c.points, c.colors
    if pts is None or len(pts) == 0:
        return
    world = (np.asarray(pts, np.float64) @ pose[:3, :3].T + pose[:3, 3]).astype("<f4")
    rec = np.zeros(len(world), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                      ("blue", "u1"), ("alpha", "u1")])
    rec["x"], rec["y"], rec["z"] = world[:, 0], world[:, 1], world[:, 2]
    raw = np.asarray(cols) if cols is not None else np.full((len(world), 3), 200, np.uint8)
    c8 = raw.astype(np.float64) * (255.0 if raw.dtype.kind == "f" else 1.0)  # float colours are in [0, 1]
    rec["red"], rec["green"], rec["blue"] = (np.clip(c8[:, i], 0, 255).astype(np.uint8) for i in range(3))
    rec["alpha"] = 255
    fields = [{"name": n, "offset": o, "type": ty} for n, o, ty in
              (("x", 0, _FLOAT32), ("y", 4, _FLOAT32), ("z", 8, _FLOAT32), ("red", 12, _UINT8),
               ("green", 13, _UINT8), ("blue", 14, _UINT8), ("alpha", 15, _UINT8))]
    out.put("/clouds", "foxglove.PointCloud", t, {
        "timestamp": _stamp(t), "frame_id": "world",
        "pose": {"position": {"x": 0.0, "y": 0.0, "z": 0.0}, "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}},
        "point_stride": 16, "fields": fields, "data": base64.b64encode(rec.tobytes()).decode()})
