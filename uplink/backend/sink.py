"""The ingest's exactly-once sink: one TUM-layout folder per device and session.

    OUT/<device>/<session>/rgb/<seq>.jpg  depth/<seq>.png (16-bit)  clouds/<seq>.ply
                           rgb.txt depth.txt trajectory.txt keyframes.txt manifests.jsonl camera.json report.html
                           frames.jsonl   <- the commit log (one line per frame; the source of truth)
                           events.jsonl telemetry.jsonl   OUT/<device>/status.json (latest)

A frame is committed by one line appended to frames.jsonl, after its files are written. Dedupe is on
(device, session, seq): a marker `.seen/f<seq>` is created with O_EXCL just before the commit line,
so two workers sharing OUT never both commit a frame. At startup a torn last line is cut and markers
without a commit line are removed (their frame is committed again when redelivered). The text files
(rgb.txt, depth.txt, trajectory.txt, keyframes.txt, manifests.jsonl) are regenerated from frames.jsonl, sorted by
time, whenever the session is finalized. Depth PNGs are at TUM's 5000 units/m (camera.json says so and
is Open3D-readable); the device's poses are estimates, so they go to trajectory.txt, never groundtruth.txt.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from uplink import messages, wire
from uplink.backend import takeback
from uplink.backend.session import _JSON_LETTER, _JSON_LOGS, Session, _append_line, _atomic_write, _read_log  # noqa: F401
from uplink.backend.tum_depth import Writer, tum_depth_png
from uplink.wire import Message, WireError

log = logging.getLogger("crowdcap.ingest.sink")

# periodic report regeneration costs at most ~1/20 of a core per session (finalize_all)
FINALIZE_GAP_FACTOR = 20.0
_PNG16_CODEC_ID = 1  # depth.codec's png16: its bytes may go to disk as they are (tum_depth.py)

_IDENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def safe_ident(s: str) -> str:
    if not _IDENT.match(s) or s in (".", ".."):
        raise WireError("bad_ident", f"{s!r} is not a safe folder name")
    return s


def quaternion(r: np.ndarray) -> tuple[float, float, float, float]:
    """(qx, qy, qz, qw) of a 3×3 rotation (Shepperd's method, robust near 180°)."""
    m = r
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        return ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s)
    i = int(np.argmax([m[0, 0], m[1, 1], m[2, 2]]))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k]) * 2
    q = [0.0, 0.0, 0.0, 0.0]
    q[i] = 0.25 * s
    q[j] = (m[j, i] + m[i, j]) / s
    q[k] = (m[k, i] + m[i, k]) / s
    q[3] = (m[k, j] - m[j, k]) / s
    return q[0], q[1], q[2], q[3]


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray | None) -> None:
    n = len(points)
    props = "property float x\nproperty float y\nproperty float z\n"
    dtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        props += "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        dtype += [("r", "u1"), ("g", "u1"), ("b", "u1")]
    rec = np.empty(n, dtype=dtype)
    rec["x"], rec["y"], rec["z"] = points[:, 0], points[:, 1], points[:, 2]
    if colors is not None:
        rec["r"], rec["g"], rec["b"] = colors[:, 0], colors[:, 1], colors[:, 2]
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n{props}end_header\n".encode()
    _atomic_write(path, header + rec.tobytes())




class Sink:
    def __init__(self, out_dir: str | os.PathLike, depth_png: Writer = "fast") -> None:
        self.out = Path(out_dir)
        self.depth_png: Writer = depth_png  # "opencv": the pre-issue-13 encoder (benches compare)
        self.out.mkdir(parents=True, exist_ok=True)
        self.counters: Counter[str] = Counter()
        self._sessions: dict[tuple[str, str], Session] = {}
        self._lock = threading.Lock()
        self.opened_session: tuple[str, str, bool] | None = None  # the latest session opened (for a log line)
        self.live: Any = None  # uplink.backend.mcap_live.LiveMcap when the ingest writes an MCAP as it goes

    def session(self, device_id: str, session_id: str) -> Session:
        key = (safe_ident(device_id), safe_ident(session_id))
        with self._lock:
            s = self._sessions.get(key)
            if s is None:
                s = self._sessions[key] = Session(self.out / key[0] / key[1])
                self.opened_session = (key[0], key[1], s.existed)
            s.last_used = time.monotonic()
            return s

    def take_opened(self) -> tuple[str, str, bool]:
        with self._lock:
            opened, self.opened_session = self.opened_session, None
        return opened or ("", "", False)

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._sessions)

    def evict_idle(self, idle: float, max_sessions: int, min_quiet: float = 5.0) -> list[tuple[str, str]]:
        """Finalize and forget sessions idle for `idle` seconds, and the least recently used beyond
        `max_sessions` (20,000 devices must not mean 20,000 sessions in memory). A forgotten session
        is reloaded from its folder (commit log, markers) if its device speaks again."""
        now = time.monotonic()
        with self._lock:
            by_age = sorted(self._sessions.items(), key=lambda kv: kv[1].last_used)
            over = max(0, len(by_age) - max_sessions)
            # never one touched in the last few seconds: a worker may be between claim and commit
            gone = [(k, s) for i, (k, s) in enumerate(by_age)
                    if (now - s.last_used >= idle or i < over) and now - s.last_used >= min_quiet]
        out = []
        for key, s in gone:
            if s.dirty:
                try:
                    self.finalize(s)
                except Exception:  # noqa: BLE001 - regenerated from frames.jsonl the next time
                    pass
            with self._lock:
                if self._sessions.get(key) is s and time.monotonic() - s.last_used >= min_quiet:
                    del self._sessions[key]
                    s.close()
                    out.append(key)
        return out

    def write(self, msg: Message, arrival: float, size: int) -> str:
        """Store one verified message; returns what happened ('frame', 'duplicate', ...).

        Thread-safe: the heavy part (decode, PNG, files) runs unlocked; only the session table and
        the claim are under the lock. Two copies of one frame written at once write identical files
        (each through its own temp file) and exactly one of them commits."""
        if msg.type == wire.FRAME:
            return self._frame(msg, arrival, size)
        if msg.type == wire.CLOUD:
            return self._cloud(msg)
        return self._json(msg, arrival)

    def _seen(self, s: Session, kind: str, seq: int) -> bool:
        with self._lock:
            return seq in s.seen(kind)

    def _claim(self, s: Session, kind: str, seq: int) -> bool:
        with self._lock:
            return s.claim(kind, seq)

    def _unclaim(self, s: Session, kind: str, seq: int) -> None:
        with self._lock:
            s.seen(kind).discard(seq)
            (s.root / ".seen" / f"{kind}{seq}").unlink(missing_ok=True)

    def _frame(self, msg: Message, arrival: float, size: int) -> str:
        s = self.session(msg.device_id, msg.session_id)
        if self._seen(s, "f", msg.seq):
            return "duplicate"
        f = messages.decode_frame(msg)  # raises WireError before anything is written
        name = f"{msg.seq:08d}"
        _atomic_write(s.root / "rgb" / f"{name}.jpg", f.jpeg)
        from capture.tum import TUM_DEPTH_SCALE, camera_doc

        scale = f.meta.get("depth_scale")
        if not isinstance(scale, int | float) or isinstance(scale, bool) or not scale > 0:
            raise WireError("bad_depth", f"depth_scale: expected a positive number, got {scale!r}")
        wire_png = msg.sections.get(wire.SEC_DEPTH) if msg.depth_codec == _PNG16_CODEC_ID else None
        try:  # bit-exact TUM PNG-16, ~3× cheaper than cv2.imencode (uplink/backend/tum_depth.py)
            png, how = tum_depth_png(f.depth, float(scale), wire_png, self.depth_png)
        except ValueError as e:
            raise WireError("bad_depth", f"PNG encoding failed: {e}") from None
        _atomic_write(s.root / "depth" / f"{name}.png", png)
        with self._lock:
            self.counters[f"depth_png_{how}"] += 1
        cam = s.root / "camera.json"
        if not cam.exists():
            from capture.frame import Intrinsics

            intr = f.meta.get("intrinsics") or {}
            try:
                camera = Intrinsics(f.width, f.height, float(intr["fx"]), float(intr["fy"]), float(intr["cx"]),
                                    float(intr["cy"]), tuple(intr.get("distortion") or ()))
            except (KeyError, TypeError, ValueError) as e:
                raise WireError("bad_meta", f"intrinsics: {e}") from None
            _atomic_write(cam, json.dumps(camera_doc(camera, TUM_DEPTH_SCALE), indent=2).encode())
        if not self._claim(s, "f", msg.seq):
            return "duplicate"
        t = msg.t_capture_ns / 1e9
        try:
            _append_line(s.root / "frames.jsonl", {
                "seq": msg.seq, "t": t, "rgb": f"rgb/{name}.jpg", "depth": f"depth/{name}.png",
                "pose": f.meta.get("pose"), "keyframe": bool(msg.flags & wire.FLAG_KEYFRAME),
                "historical": msg.historical, "degraded": bool(msg.flags & wire.FLAG_DEGRADED),
                "bytes": size, "arrival": arrival, "latency_s": round(arrival - t, 6), "manifest": f.manifest})
        except BaseException:
            # Not committed (disk full): release the claim, or the broker's redelivery would be taken
            # for a duplicate, acknowledged, and the frame lost.
            self._unclaim(s, "f", msg.seq)
            raise
        s.committed_frames.add(msg.seq)
        s.dirty = True
        taken = takeback.after_write(s.root, msg.seq, t)  # a take-back may have arrived before this frame
        if self.live is not None and taken is None:  # after the commit; a taken-back frame never goes in
            self.live.frame(s.root, f, t)
        return "frame"

    def _cloud(self, msg: Message) -> str:
        s = self.session(msg.device_id, msg.session_id)
        if self._seen(s, "c", msg.seq):
            return "duplicate"
        pts, colors, _meta = messages.decode_cloud(msg)
        write_ply(s.root / "clouds" / f"{msg.seq:08d}.ply", pts, colors)
        if not self._claim(s, "c", msg.seq):
            return "duplicate"
        s.dirty = True
        takeback.after_write(s.root, msg.seq, msg.t_capture_ns / 1e9)
        return "cloud"

    def _json(self, msg: Message, arrival: float) -> str:
        payload = msg.json_section(wire.SEC_META)
        dev = self.out / safe_ident(msg.device_id)
        dev.mkdir(parents=True, exist_ok=True)
        entry = {"kind": msg.kind, "seq": msg.seq, "t": msg.t_capture_ns / 1e9, "arrival": arrival,
                 "session_id": msg.session_id, "historical": msg.historical, "payload": payload}
        if msg.type == wire.STATUS:
            _atomic_write(dev / "status.json", json.dumps(entry).encode())
            return "status"
        s = self.session(msg.device_id, msg.session_id)
        letter, log_name = _JSON_LOGS[msg.type]
        # spooled, so re-sent after a reconnect: deduped on (session, kind, seq) like frames
        if self._seen(s, letter, msg.seq) or not self._claim(s, letter, msg.seq):
            return "duplicate"
        try:
            _append_line(s.root / log_name, entry)
        except BaseException:
            self._unclaim(s, letter, msg.seq)
            raise
        if msg.type == wire.EVENT and isinstance(payload, dict) and payload.get("type") == "takeback":
            try:  # the wearer took frames back: delete / re-redact them (uplink/backend/takeback.py)
                takeback.apply(dev, payload)
                if self.live is not None:  # an append-only MCAP cannot forget frames: drop it (re-export)
                    self.live.discard(dev)
            except ValueError as e:
                log.warning("take-back refused: %s", e)
            s.dirty = True
        return msg.kind

    def finalize(self, session: Session, report: bool = True) -> None:
        """Regenerate the TUM text files (sorted by time) and report.html from the commit log."""
        frames = read_frames(session.root)
        lines = {"rgb.txt": ["# color images", "# timestamp filename"],
                 "depth.txt": ["# depth maps", "# timestamp filename"],
                 "trajectory.txt": ["# estimated trajectory (device odometry; not ground truth)",
                                    "# timestamp tx ty tz qx qy qz qw"],
                 "keyframes.txt": ["# the device's keyframes (estimated poses)", "# timestamp tx ty tz qx qy qz qw"]}
        manifests = []
        for fr in frames:
            lines["rgb.txt"].append(f"{fr['t']:.6f} {fr['rgb']}")
            lines["depth.txt"].append(f"{fr['t']:.6f} {fr['depth']}")
            p = _pose(fr.get("pose"))
            if p is not None:
                q = quaternion(p[:3, :3])
                line = f"{fr['t']:.6f} {p[0, 3]:.6f} {p[1, 3]:.6f} {p[2, 3]:.6f} " + " ".join(f"{v:.6f}" for v in q)
                lines["trajectory.txt"].append(line)
                if fr.get("keyframe"):
                    lines["keyframes.txt"].append(line)
            manifests.append(json.dumps({"seq": fr["seq"], "t": fr["t"], "manifest": fr.get("manifest")},
                                        default=wire._json_default))
        for name, ls in lines.items():
            _atomic_write(session.root / name, ("\n".join(ls) + "\n").encode())
        _atomic_write(session.root / "manifests.jsonl", ("\n".join(manifests) + "\n" if manifests else "").encode())
        if report:
            from uplink.backend.report import write_report

            write_report(session.root, frames)
        session.dirty = False

    def finalize_all(self, only_dirty: bool = False, throttle: bool = False) -> None:
        """Finalize every (dirty) session. `throttle` (the ingest's periodic round): a session whose
        last finalize cost C CPU-seconds waits FINALIZE_GAP_FACTOR × C before the next one. The report
        reads the whole commit log, so its cost grows with the session (~55 µs per frame here: 1.7 s
        at 30,000 frames); without this a long session's periodic report would eat the ingest's CPU.
        A session's last finalize (idle eviction, ingest stop) is never throttled."""
        for s in self.sessions():
            if only_dirty and not s.dirty:
                continue
            if throttle and time.monotonic() < s.finalize_due:
                with self._lock:
                    self.counters["finalize_deferred"] += 1
                continue
            t0 = time.thread_time()
            self.finalize(s)
            s.finalize_due = time.monotonic() + FINALIZE_GAP_FACTOR * (time.thread_time() - t0)


def _pose(v: Any) -> np.ndarray | None:
    """A committed pose as 4×4, or None if absent or malformed (old data; decode_frame checks new)."""
    try:
        p = np.asarray(v, dtype=float).reshape(4, 4) if v else None
    except (TypeError, ValueError):
        return None
    return p if p is not None and np.isfinite(p).all() else None


def read_frames(root: Path) -> list[dict]:
    """The committed frames of a session folder, sorted by capture time."""
    out = []
    try:
        data = (root / "frames.jsonl").read_bytes()
    except FileNotFoundError:
        return out
    for line in data.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    out.sort(key=lambda f: (f.get("t", 0), f.get("seq", 0)))
    gone = takeback.deleted(root)
    return [f for f in out if f.get("seq") not in gone] if gone else out
