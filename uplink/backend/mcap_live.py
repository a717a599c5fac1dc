"""The ingest's MCAP per session, written as frames are committed (`crowdcap ingest --mcap`).

OUT/<device>/<session>/mcap/<host>-<pid>-<start>.mcap: one file per ingest process (workers sharing OUT
never interleave records in one file; a restarted worker starts a new file). Unchunked, flushed after
every frame: MCAP is append-only, so a file cut by a crash or power loss keeps every whole record before
the cut (read it with `mcap.stream_reader.StreamReader`, or `mcap recover`); a clean stop writes the
summary, so it opens directly. A wearer's take-back deletes the device's live MCAP files (an append-only
file cannot forget frames; `crowdcap export` rebuilds one from the session, which honours the take-back),
and a frame a take-back already covers on arrival is never appended. Same topics and schemas as `crowdcap export` (uplink/backend/export.py),
minus clouds; frames.jsonl stays the source of truth (a failed MCAP write is counted, never fatal).
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("crowdcap.ingest.mcap")


class LiveMcap:
    def __init__(self) -> None:
        self._files: dict[Path, tuple[Any, Any]] = {}  # session root -> (file handle, _Out)
        self._lock = threading.Lock()
        self.errors = 0
        self._tag = f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"

    def _out(self, root: Path) -> Any:
        from mcap.writer import CompressionType, Writer

        from uplink.backend.export import _Out

        entry = self._files.get(root)
        if entry is None:
            (root / "mcap").mkdir(exist_ok=True)
            fh = (root / "mcap" / f"{self._tag}.mcap").open("wb")
            writer = Writer(fh, use_chunking=False, compression=CompressionType.NONE)
            writer.start(profile="", library="crowdcap ingest")
            entry = self._files[root] = (fh, _Out(writer))
        return entry[1]

    def frame(self, root: Path, decoded: Any, t: float) -> None:
        """Append one committed frame (colour as received, depth in metres, pose, calibration, regions)."""
        try:
            with self._lock:
                self._frame(root, decoded, t)
        except Exception as e:  # noqa: BLE001 - the session folder is the record; this is a view of it
            self.errors += 1
            if self.errors <= 3:
                log.warning("ingest: MCAP write failed for %s: %s: %s", root, type(e).__name__, e)

    def _frame(self, root: Path, f: Any, t: float) -> None:
        from capture.frame import Intrinsics
        from uplink.backend.export import _quat, _regions, _stamp

        out = self._out(root)
        meta = f.meta
        scale = float(meta.get("depth_scale") or 1000.0)
        ki = meta.get("intrinsics") or {}
        intr = Intrinsics(f.width, f.height, float(ki["fx"]), float(ki["fy"]), float(ki["cx"]), float(ki["cy"]),
                          tuple(ki.get("distortion") or ()))
        out.put("/camera/color", "foxglove.CompressedImage", t, {
            "timestamp": _stamp(t), "frame_id": "camera", "format": "jpeg", "data": base64.b64encode(f.jpeg).decode()})
        metres = (f.depth.astype(np.float32) / np.float32(scale)).astype("<f4")
        out.put("/camera/depth", "foxglove.RawImage", t, {
            "timestamp": _stamp(t), "frame_id": "camera", "width": f.width, "height": f.height, "encoding": "32FC1",
            "step": f.width * 4, "data": base64.b64encode(metres.tobytes()).decode()})
        out.put("/camera/calibration", "foxglove.CameraCalibration", t, {
            "timestamp": _stamp(t), "frame_id": "camera", "width": f.width, "height": f.height,
            "distortion_model": "plumb_bob", "D": [float(v) for v in (list(intr.distortion) + [0.0] * 5)[:5]],
            "K": [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0], "R": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
            "P": [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]})
        pose = meta.get("pose")
        if isinstance(pose, list) and len(pose) == 16:
            tr, rot = _quat(np.asarray(pose, dtype=np.float64).reshape(4, 4))
            out.put("/tf", "foxglove.FrameTransform", t, {
                "timestamp": _stamp(t), "parent_frame_id": "world", "child_frame_id": "camera",
                "translation": tr, "rotation": rot})
        if isinstance(f.manifest, dict):
            _regions(out, t, {"manifest": f.manifest}, f.depth, intr, scale)
        self._files[root][0].flush()

    def discard(self, device_dir: Path) -> int:
        """Close and delete every live MCAP of the device's sessions (after a take-back); count removed."""
        with self._lock:
            for root in [r for r in self._files if r.parent == device_dir]:
                fh, _ = self._files.pop(root)
                fh.close()
            removed = 0
            for path in device_dir.glob("*/mcap/*.mcap"):
                path.unlink(missing_ok=True)
                removed += 1
            return removed

    def close(self, root: Path | None = None) -> None:
        """Finish (summary + footer) one session's file, or all of them."""
        with self._lock:
            for r in [root] if root is not None else list(self._files):
                entry = self._files.pop(r, None)
                if entry is None:
                    continue
                fh, out = entry
                try:
                    out.w.finish()
                finally:
                    fh.close()
