"""RGBDFrame / cloud / JSON <-> wire `Message`: what goes into each section, both directions.

Depth uses `depth.codec` (stable wire ids). The decoders here run on untrusted bytes in the ingest:
dimensions are checked against limits before any decode, and the depth codec's own decoder is
bounds-checked and refuses output larger than width × height.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from capture.frame import RGBDFrame
from uplink import wire
from uplink.wire import DEFAULT_LIMITS, Limits, Message, WireError


class _ZstdFallback:
    """Used only while depth.codec is unavailable; same wire id (2) and format as depth.codec's zstd."""

    name = "zstd"
    codec_id = 2

    def encode(self, depth: np.ndarray) -> bytes:
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress(np.ascontiguousarray(depth, dtype="<u2").tobytes())

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        import zstandard

        try:
            raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=width * height * 2)
        except zstandard.ZstdError as e:
            raise ValueError(f"zstd: {e}") from None
        if len(raw) != width * height * 2:
            raise ValueError("zstd: wrong decoded size")
        return np.frombuffer(raw, dtype="<u2").reshape(height, width).astype(np.uint16)


def depth_codec(name: str) -> Any:
    try:
        from depth.codec import get_codec
    except ImportError:
        if name != "zstd":
            raise ValueError(f"depth codec {name!r} unavailable (depth.codec missing); use zstd") from None
        return _ZstdFallback()
    return get_codec(name)


def depth_codec_by_id(codec_id: int) -> Any:
    try:
        from depth.codec import codec_by_id
    except ImportError:
        if codec_id == 2:
            return _ZstdFallback()
        raise WireError("bad_depth_codec", f"id {codec_id}") from None
    try:
        return codec_by_id(codec_id)
    except ValueError:
        raise WireError("bad_depth_codec", f"id {codec_id}") from None


def encode_frame(frame: RGBDFrame, codec: Any, jpeg_quality: int, flags: int = 0) -> Message:
    ok, jpeg = cv2.imencode(".jpg", frame.color, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    h, w = frame.depth.shape
    meta = {
        "width": w, "height": h, "intrinsics": frame.intrinsics.to_dict(), "depth_scale": float(frame.depth_scale),
        "pose": None if frame.pose is None else np.asarray(frame.pose, dtype=float).ravel().tolist(),
        "keyframe": bool(frame.keyframe), "t_mono_ns": int(frame.t_mono_ns), "t_utc": float(frame.t_utc),
        "jpeg_quality": int(jpeg_quality), "gps": list(frame.gps),
    }
    if frame.keyframe:
        flags |= wire.FLAG_KEYFRAME
    return Message(wire.FRAME, frame.device_id, frame.session_id, int(frame.seq), int(frame.t_utc * 1e9), flags,
                   wire.COLOR_JPEG, int(codec.codec_id),
                   {wire.SEC_META: wire.json_bytes(meta), wire.SEC_MANIFEST: wire.json_bytes(frame.redaction),
                    wire.SEC_COLOR: jpeg.tobytes(), wire.SEC_DEPTH: codec.encode(frame.depth)})


def encode_cloud(frame: RGBDFrame, cloud: dict[str, Any], flags: int = 0) -> Message:
    pts = np.ascontiguousarray(cloud["points"], dtype="<f4").reshape(-1, 3)
    colors = cloud.get("colors")
    sections = {wire.SEC_POINTS: pts.tobytes()}
    if colors is not None:
        c = np.ascontiguousarray(colors, dtype=np.uint8).reshape(-1, 3)
        if len(c) != len(pts):
            raise ValueError(f"cloud.colors: {len(c)} rows for {len(pts)} points")
        sections[wire.SEC_COLORS] = c.tobytes()
    meta = {"points": len(pts), "frame_seq": int(frame.seq), "t_utc": float(frame.t_utc),
            "pose": None if frame.pose is None else np.asarray(frame.pose, dtype=float).ravel().tolist()}
    sections[wire.SEC_META] = wire.json_bytes(meta)
    return Message(wire.CLOUD, frame.device_id, frame.session_id, int(frame.seq), int(frame.t_utc * 1e9),
                   flags, sections=sections)


def encode_json(kind: str, device_id: str, session_id: str, seq: int, t_utc: float, payload: dict) -> Message:
    mtype = wire.TYPE_BY_NAME.get(kind)
    if mtype is None or mtype in (wire.FRAME, wire.CLOUD):
        raise ValueError(f"kind: expected status, telemetry, event or cmd_result, got {kind!r}")
    return Message(mtype, device_id, session_id, seq, int(t_utc * 1e9), sections={wire.SEC_META: wire.json_bytes(payload)})


@dataclass
class DecodedFrame:
    message: Message
    meta: dict[str, Any]
    manifest: Any
    jpeg: bytes
    depth: np.ndarray
    width: int
    height: int


def _dim(meta: dict, key: str) -> int:
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise WireError("bad_meta", f"{key}={v!r}")
    return v


def decode_frame(msg: Message, limits: Limits = DEFAULT_LIMITS) -> DecodedFrame:
    """Validate and decode a frame message's sections; WireError on anything inconsistent."""
    meta = msg.meta(limits)
    w, h = _dim(meta, "width"), _dim(meta, "height")
    pose = meta.get("pose")
    if pose is not None and not (isinstance(pose, list) and len(pose) == 16 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in pose)):
        raise WireError("bad_meta", "pose: expected null or 16 finite numbers")
    if not isinstance(meta.get("intrinsics", {}), dict):
        raise WireError("bad_meta", "intrinsics: expected an object")
    if w * h > limits.max_pixels:
        raise WireError("too_large", f"{w}x{h}")
    jpeg = msg.sections.get(wire.SEC_COLOR)
    depth_bytes = msg.sections.get(wire.SEC_DEPTH)
    if jpeg is None or depth_bytes is None or msg.color_codec != wire.COLOR_JPEG:
        raise WireError("bad_frame", "color or depth section missing")
    if wire.jpeg_size(jpeg) != (w, h):
        raise WireError("bad_color", f"JPEG size {wire.jpeg_size(jpeg)} != {w}x{h}")
    codec = depth_codec_by_id(msg.depth_codec)
    try:
        depth = codec.decode(depth_bytes, w, h)
    except (ValueError, MemoryError) as e:
        raise WireError("bad_depth", str(e)[:200]) from None
    if depth.shape != (h, w) or depth.dtype != np.uint16:
        raise WireError("bad_depth", f"decoded {depth.dtype} {depth.shape}")
    return DecodedFrame(msg, meta, msg.json_section(wire.SEC_MANIFEST, limits), jpeg, depth, w, h)


def decode_cloud(msg: Message, limits: Limits = DEFAULT_LIMITS) -> tuple[np.ndarray, np.ndarray | None, dict]:
    meta = msg.meta(limits)
    pts = wire.points_from_section(msg.sections.get(wire.SEC_POINTS, b""), limits)
    colors = msg.sections.get(wire.SEC_COLORS)
    return pts, None if colors is None else wire.colors_from_section(colors, len(pts)), meta
