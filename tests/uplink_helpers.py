"""Shared bits of the uplink tests: small synthetic-looking frames, a threaded ingest, folder counts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from capture.frame import Intrinsics, RGBDFrame
from uplink.backend.ingest import Ingest
from uplink.config import UplinkConfig

INTR = Intrinsics(160, 120, 130.0, 130.0, 79.5, 59.5)


def make_frame(seq: int, device_id: str = "dev1", session_id: str = "s1", keyframe: bool | None = None,
               cloud: bool = False, size: tuple[int, int] = (160, 120)) -> RGBDFrame:
    w, h = size
    rng = np.random.default_rng(seq)
    yy, xx = np.mgrid[0:h, 0:w]
    color = np.stack([(xx + seq) % 256, (yy * 2) % 256, ((xx + yy) // 2 + seq * 3) % 256], -1).astype(np.uint8)
    depth = (1500 + 3 * xx + rng.integers(0, 8, (h, w))).astype(np.uint16)
    depth[::17, ::13] = 0
    pose = np.eye(4)
    pose[:3, 3] = [0.01 * seq, 0.0, 0.002 * seq]
    intr = INTR if (w, h) == (160, 120) else Intrinsics(w, h, 525.0, 525.0, w / 2 - 0.5, h / 2 - 0.5)
    kf = (seq % 10 == 0) if keyframe is None else keyframe
    att = {}
    if cloud:
        att["cloud"] = {"points": rng.normal(size=(500, 3)).astype(np.float32),
                        "colors": rng.integers(0, 255, (500, 3), dtype=np.uint8)}
    return RGBDFrame(device_id, session_id, seq, time.monotonic_ns(), time.time(), color, depth, 1000.0, intr,
                     pose=pose, keyframe=kf, attachments=att,
                     redaction={"regions": [{"bbox": [10, 10, 40, 50], "class": "face"}], "policy": "test"})


def uplink_cfg(tmp: Path, broker: str = "", **kw) -> UplinkConfig:
    """Production durability (fsync as shipped) and end-to-end delivery, with quick reconnects."""
    kw.setdefault("backoff_min", 0.1)
    kw.setdefault("backoff_max", 0.5)
    kw.setdefault("max_payload", 16 * 1024)  # several chunks per frame: exercises reassembly
    return UplinkConfig(broker=broker, spool_dir=str(tmp / "spool"), **kw)


class IngestThread:
    def __init__(self, url: str, out: Path, **kw) -> None:
        self.ingest = Ingest(url, out, report_every=3600, **kw)
        self.result: dict | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.ingest.connected:
            assert time.monotonic() < deadline, "ingest did not connect"
            assert self.thread.is_alive(), "ingest thread died"
            time.sleep(0.02)

    def _run(self) -> None:
        self.result = self.ingest.run()

    def stop(self) -> dict:
        self.ingest.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self.result


def committed_seqs(out: Path, device: str = "dev1", session: str = "s1") -> list[int]:
    """Every committed frame seq (with repeats, so duplicates show)."""
    path = out / device / session / "frames.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["seq"] for line in path.read_text().splitlines() if line.strip()]


def wait_for_frames(out: Path, n: int, timeout: float, **kw) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        seqs = committed_seqs(out, **kw)
        if len(set(seqs)) >= n or time.monotonic() > deadline:
            return seqs
        time.sleep(0.05)


class Feeder:
    """Applies frames seq start..start+n-1 to a stage from a thread at `fps` (0 = as fast as possible)."""

    def __init__(self, stage, n: int, fps: float = 0.0, start: int = 0, **frame_kw) -> None:
        self.stage, self.n, self.fps, self.start = stage, n, fps, start
        self.accepted = 0
        self.frame_kw = frame_kw
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            t0 = time.monotonic()
            for i in range(self.n):
                if self.fps:
                    delay = t0 + i / self.fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)  # pacing a producer, not synchronising a test
                self.stage.apply(make_frame(self.start + i, **self.frame_kw))
                self.accepted += 1
        except BaseException as e:  # surfaced by join()
            self.error = e

    def wait_accepted(self, k: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.accepted < k:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"only {self.accepted} of {k} frames accepted"
            time.sleep(0.01)

    def join(self, timeout: float = 60) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "feeder stuck"
        assert self.error is None, self.error


class TcpProxy:
    """Loopback TCP proxy to (host, port). cut(): existing connections are closed and new ones are
    accepted but black-holed (no bytes forwarded) until heal() — what a dead LTE link looks like."""

    def __init__(self, host: str, port: int) -> None:
        import socket as _s

        self.target = (host, port)
        self.listener = _s.socket()
        self.listener.setsockopt(_s.SOL_SOCKET, _s.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._cut = threading.Event()
        self._conns: list = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket as _s

        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                with self._lock:
                    self._conns.append((client, None))  # held open, never forwarded
                continue
            try:
                upstream = _s.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a, b) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data or self._cut.is_set():
                    break
                b.sendall(data)
        except OSError:
            pass
        if not self._cut.is_set():
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """Stop forwarding: live connections go silent (black-holed), like a lost radio link."""
        self._cut.set()

    def heal(self) -> None:
        """Forward again; connections from during the cut are dropped so clients reconnect."""
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            for s in c:
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
        self._cut.clear()

    def close(self) -> None:
        self._closed = True
        self.heal()
        self.listener.close()
