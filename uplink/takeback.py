"""Take-backs on the device: the wearer marks the last N seconds as private after the fact.

    tb = TakeBack.last(seconds, region=[x1, y1, x2, y2] | None)    # None: drop everything in the span
    counts = spool.rewrite({wire.FRAME, wire.CLOUD}, since, lambda data, rec: redo(data, tb))
    frame = filter_frame(frame, takebacks)    # frames still in the pipeline when it was issued
    payload = tb.message()                    # an `event` to the backend: delete / re-redact what it has

Frames of the span still in the spool are re-redacted (region filled black in colour, 0 in depth, the
manifest gets a `takeback` region) or dropped (`--all`); their clouds are dropped either way (points
cannot be re-redacted by pixel region cheaply and safely). What was sent already is the backend's job:
the `takeback` event (docs/wire-format.md) makes the ingest delete or re-redact it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from capture.frame import FrameWithheld, RGBDFrame
from uplink import messages, wire


@dataclass
class TakeBack:
    t_from: float  # UTC seconds (capture time)
    t_to: float
    region: list[int] | None  # x1, y1, x2, y2 pixels; None = everything (delete)
    since_mono: float  # spool records appended since this monotonic time are candidates
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @classmethod
    def last(cls, seconds: float, region: list[int] | None) -> TakeBack:
        now = time.time()
        # appended to the spool up to a pipeline latency after capture: look a little further back
        return cls(now - seconds, now, region, time.monotonic() - seconds - 5.0)

    def covers(self, t_utc: float) -> bool:
        return self.t_from <= t_utc <= self.t_to

    def message(self, session_id: str) -> dict[str, Any]:
        return {"type": "takeback", "v": 1, "id": self.id, "session_id": session_id, "from": round(self.t_from, 6),
                "to": round(self.t_to, 6), "action": "redact" if self.region else "delete",
                "region": self.region}


def redact_arrays(color: np.ndarray, depth: np.ndarray, region: list[int]) -> None:
    x1, y1, x2, y2 = region
    color[y1:y2, x1:x2] = 0
    depth[y1:y2, x1:x2] = 0


def _manifest_with(manifest: Any, tb: TakeBack) -> Any:
    out = dict(manifest) if isinstance(manifest, dict) else {"regions": []}
    out["regions"] = list(out.get("regions") or []) + [
        {"bbox": list(tb.region or []), "class": "takeback", "score": 1.0, "action": "fill", "applies_to": "both",
         "source": "takeback", "takeback": tb.id}]
    return out


def redo(data: bytes, rec_kind: int, tb: TakeBack) -> bytes | None:
    """A spooled record after the take-back: new bytes, None (drop) or `data` itself (not in the span)."""
    try:
        msg = wire.decode(data)
    except wire.WireError:
        return data  # not ours to judge; it stays as it was (the backend refuses garbage anyway)
    if not tb.covers(msg.t_capture_ns / 1e9):
        return data
    if rec_kind != wire.FRAME or tb.region is None:
        return None
    f = messages.decode_frame(msg)
    color = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
    depth = f.depth.copy()
    redact_arrays(color, depth, tb.region)
    quality = int(f.meta.get("jpeg_quality", 90))
    ok, jpeg = cv2.imencode(".jpg", color, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return None  # cannot re-encode: drop rather than send the original
    codec = messages.depth_codec_by_id(msg.depth_codec)
    sections = dict(msg.sections)
    sections[wire.SEC_COLOR] = jpeg.tobytes()
    sections[wire.SEC_DEPTH] = codec.encode(depth)
    sections[wire.SEC_MANIFEST] = wire.json_bytes(_manifest_with(f.manifest, tb))
    return wire.encode(wire.Message(msg.type, msg.device_id, msg.session_id, msg.seq, msg.t_capture_ns, msg.flags,
                                    msg.color_codec, msg.depth_codec, sections))


def filter_frame(frame: RGBDFrame, takebacks: list[TakeBack]) -> RGBDFrame:
    """A frame reaching the uplink after a take-back that covers it: re-redacted, or withheld."""
    for tb in takebacks:
        if not tb.covers(frame.t_utc):
            continue
        if tb.region is None:
            raise FrameWithheld("taken_back", f"take-back {tb.id}")
        color, depth = frame.color.copy(), frame.depth.copy()
        redact_arrays(color, depth, tb.region)
        attachments = {k: v for k, v in frame.attachments.items() if k != "cloud"}
        frame = frame.replace(color=color, depth=depth, redaction=_manifest_with(frame.redaction, tb),
                              attachments=attachments)
    return frame
