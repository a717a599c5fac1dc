"""One ingested session's folder and its exactly-once claims (used by `uplink.backend.sink`).

A frame is claimed by an O_EXCL marker `.seen/f<seq>` just before its commit line in frames.jsonl;
`Session` rebuilds what is committed from the logs, drops the markers of claims a crashed worker never
committed (only when no other worker holds the session: a shared flock on `.seen/.lock`), and answers
whether a frame's first copy is committed (the confirmer re-acks duplicates only then). The small file
helpers (`_atomic_write`, `_append_line`, `_read_log`) are shared with the sink.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from uplink import wire


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # unique per writer
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _append_line(path: Path, obj: Any) -> None:
    line = (json.dumps(obj, separators=(",", ":"), default=wire._json_default) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)  # one write on O_APPEND: lines from several workers never interleave
        if written != len(line):  # disk full: end the fragment so the next line is not glued to it
            try:
                os.write(fd, b"\n")
            except OSError:
                pass
            raise OSError(28, f"{path}: short write ({written} of {len(line)} bytes)")
    finally:
        os.close(fd)


def _read_log(path: Path) -> list[dict]:
    """The entries of a JSON-lines log, after cutting a torn last line (a crash mid-append)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        _atomic_write(path, data)
    out = []
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


# JSON messages that are spooled (so re-sent after a reconnect): marker letter and log file
_JSON_LOGS = {wire.TELEMETRY: ("t", "telemetry.jsonl"), wire.EVENT: ("e", "events.jsonl"),
              wire.CMD_RESULT: ("r", "events.jsonl")}
_JSON_LETTER = {wire.TYPE_NAMES[t]: letter for t, (letter, _) in _JSON_LOGS.items()}


class Session:
    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("rgb", "depth", "clouds", ".seen"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.seen_frames: set[int] = set()
        self.seen_clouds: set[int] = set()
        self.seen_json: dict[str, set[int]] = {letter: set() for letter, _ in _JSON_LOGS.values()}
        self.dirty = True
        self.last_used = time.monotonic()
        self.finalize_due = 0.0  # monotonic time before which a periodic finalize is deferred (sink.py)
        self.existed = (root / "frames.jsonl").exists()
        # Every open Session (any worker, any process) holds a shared flock on .seen/.lock. Markers of
        # uncommitted claims are a crashed worker's only when no one else has the session open: with
        # the lock held exclusively. Otherwise they may be a live worker's claim between marker and
        # commit, and deleting them would let a resend commit the frame twice. The kernel drops the
        # lock of a killed process.
        self._lock_fd = os.open(root / ".seen" / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        self._recover(drop_stale_claims=alone)
        fcntl.flock(self._lock_fd, fcntl.LOCK_SH)  # from exclusive: a conversion; else waits out a recovery

    def close(self) -> None:
        """Release the session's shared lock (a forgotten session; the kernel does it on exit too)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __del__(self) -> None:
        self.close()

    def committed(self, kind: str, seq: int) -> bool:
        """A frame is durable-to-be only once its line is in frames.jsonl (a claim marker alone may be a
        crashed or a concurrent worker's): the re-ack of a duplicate asks this. Another worker's commit
        is found by reading the log again (duplicates are rare)."""
        if kind != "f":
            return seq in self.seen(kind)
        if seq not in self.committed_frames:
            for entry in _read_log(self.root / "frames.jsonl"):
                if entry.get("seq") == seq:
                    self.committed_frames.add(seq)
                    break
        return seq in self.committed_frames

    def seen(self, kind: str) -> set[int]:
        return self.seen_frames if kind == "f" else self.seen_clouds if kind == "c" else self.seen_json[kind]

    def _recover(self, drop_stale_claims: bool = True) -> None:
        committed: set[int] = set()
        for entry in _read_log(self.root / "frames.jsonl"):
            try:
                committed.add(int(entry["seq"]))
            except (ValueError, KeyError, TypeError):
                continue
        for name in sorted({name for _, name in _JSON_LOGS.values()}):
            for entry in _read_log(self.root / name):
                letter, seq = _JSON_LETTER.get(entry.get("kind")), entry.get("seq")
                if letter and isinstance(seq, int):
                    self.seen_json[letter].add(seq)
        clouds = {int(p.stem) for p in (self.root / "clouds").glob("*.ply") if p.stem.isdigit()}
        for marker in (self.root / ".seen").iterdir() if drop_stale_claims else ():
            kind, num = marker.name[:1], marker.name[1:]
            if not num.isdigit():
                continue
            seq = int(num)
            if kind == "f" and seq not in committed:
                marker.unlink(missing_ok=True)  # crashed between marker and commit: commit it next time
            elif kind == "c" and seq not in clouds:
                marker.unlink(missing_ok=True)
            elif kind in self.seen_json and seq not in self.seen_json[kind]:
                marker.unlink(missing_ok=True)
        self.seen_frames = set(committed)
        self.committed_frames = committed
        self.seen_clouds = clouds

    def claim(self, kind: str, seq: int) -> bool:
        """True exactly once per (kind, seq) across restarts and workers."""
        seen = self.seen(kind)
        if seq in seen:
            return False
        try:
            os.close(os.open(self.root / ".seen" / f"{kind}{seq}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            seen.add(seq)
            return False
        seen.add(seq)
        return True
