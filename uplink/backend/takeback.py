"""The ingest honours take-backs: a device's `takeback` event deletes or re-redacts what it sent.

    apply(device_dir, payload)             # on the event: every session folder of that device
    after_write(session_root, seq, t)      # on every frame/cloud written later (it may arrive after the event)
    deleted(session_root) -> {seq, ...}    # frames the commit log still lists but that were taken back

Payload (docs/wire-format.md, "Take-backs"): `{"type": "takeback", "v": 1, "id", "session_id",
"from", "to" (UTC seconds, capture time), "action": "delete" | "redact", "region": [x1, y1, x2, y2] | null}`.
`delete` removes the frame's colour, depth and cloud files and tombstones it (`deleted.jsonl`, so
rgb.txt/depth.txt/report no longer list it); `redact` fills the region black in the JPEG and zeroes it
in the depth PNG (files replaced atomically) and removes the frame's cloud. Every take-back is kept in
`OUT/<device>/takebacks.jsonl` and each deletion or re-redaction is logged. A malformed payload is
refused (`ValueError` naming the field): nothing is touched.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger("crowdcap.ingest.takeback")

LOG_NAME = "takebacks.jsonl"
TOMBSTONES = "deleted.jsonl"


def validate(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict) or payload.get("type") != "takeback":
        raise ValueError("takeback: not a take-back payload")
    out: dict[str, Any] = {"id": str(payload.get("id", ""))[:64]}
    for key in ("from", "to"):
        v = payload.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"takeback.{key}: expected UTC seconds, got {v!r}")
        out[key] = float(v)
    if not 0 <= out["to"] - out["from"] <= 7 * 86400:
        raise ValueError(f"takeback: span from {out['from']} to {out['to']} is not 0-7 days")
    action = payload.get("action")
    if action not in ("delete", "redact"):
        raise ValueError(f"takeback.action: expected delete or redact, got {action!r}")
    out["action"] = action
    region = payload.get("region")
    if action == "redact":
        if not (isinstance(region, list) and len(region) == 4 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                       and 0 <= v <= 65535 for v in region)
                and region[0] < region[2] and region[1] < region[3]):
            raise ValueError(f"takeback.region: expected [x1, y1, x2, y2] pixels, got {region!r}")
    out["region"] = region if action == "redact" else None
    return out


def _append(path: Path, obj: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(obj, separators=(",", ":")) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict):
            out.append(v)
    return out


def deleted(session_root: Path) -> set[int]:
    return {int(e["seq"]) for e in _lines(session_root / TOMBSTONES) if isinstance(e.get("seq"), int)}


def apply(device_dir: Path, payload: Any) -> dict[str, int]:
    """Honour a take-back for every session of the device; counts of what was done."""
    tb = validate(payload)
    device_dir.mkdir(parents=True, exist_ok=True)
    _append(device_dir / LOG_NAME, tb)
    counts = {"deleted": 0, "redacted": 0}
    for session in sorted(p for p in device_dir.iterdir() if p.is_dir()):
        for fr in _lines(session / "frames.jsonl"):
            t, seq = fr.get("t"), fr.get("seq")
            if isinstance(t, int | float) and isinstance(seq, int) and tb["from"] <= t <= tb["to"]:
                counts[_apply_frame(session, seq, tb)] += 1
    log.warning("take-back %s from %s: %d frame(s) deleted, %d re-redacted (%s to %s)", tb["id"], device_dir.name,
                counts["deleted"], counts["redacted"], tb["from"], tb["to"])
    return counts


def after_write(session_root: Path, seq: int, t: float) -> str | None:
    """A frame or cloud written after a take-back that covers it: honour it now."""
    for tb in _lines(session_root.parent / LOG_NAME):
        try:
            tb = validate({"type": "takeback", **tb})
        except ValueError:
            continue
        if tb["from"] <= t <= tb["to"]:
            what = _apply_frame(session_root, seq, tb)
            log.warning("take-back %s: frame %s/%d %s on arrival", tb["id"], session_root.name, seq, what)
            return what
    return None


def _apply_frame(session: Path, seq: int, tb: dict[str, Any]) -> str:
    name = f"{seq:08d}"
    (session / "clouds" / f"{name}.ply").unlink(missing_ok=True)  # points cannot be re-redacted by region
    if tb["action"] == "delete":
        if seq not in deleted(session):
            _append(session / TOMBSTONES, {"seq": seq, "takeback": tb["id"]})
        (session / "rgb" / f"{name}.jpg").unlink(missing_ok=True)
        (session / "depth" / f"{name}.png").unlink(missing_ok=True)
        return "deleted"
    x1, y1, x2, y2 = tb["region"]
    rgb, dep = session / "rgb" / f"{name}.jpg", session / "depth" / f"{name}.png"
    color = cv2.imread(str(rgb), cv2.IMREAD_COLOR)
    if color is not None:
        color[y1:y2, x1:x2] = 0
        _replace(rgb, color)
    depth = cv2.imread(str(dep), cv2.IMREAD_UNCHANGED)
    if depth is not None:
        depth[y1:y2, x1:x2] = 0
        _replace(dep, depth.astype(np.uint16))
    return "redacted"


def _replace(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(path.suffix, image)
    if not ok:
        raise OSError(f"{path}: cannot encode")
    tmp = path.with_name(f".{path.name}.takeback.tmp")
    with tmp.open("wb") as fh:
        fh.write(buf.tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
