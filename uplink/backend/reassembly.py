"""Chunk reassembly for the ingest, on disk: bounded memory, survives restarts, shared by workers.

Each chunk of a multi-chunk message is written to `DIR/<message id>/<index>` (tmp + rename) before the
ingest PUBACKs it, so a restarted ingest (or another worker of a shared subscription, with the same
DIR) still completes the message. The worker that sees the last chunk claims the message by renaming
its folder (atomic: exactly one worker wins) and assembles it. Partials older than `timeout` are
deleted and counted; so is anything over the byte budget. Single-chunk messages never touch the disk.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path

from uplink import wire
from uplink.wire import Chunk, Limits, WireError


class Reassembler:
    def __init__(self, directory: str | os.PathLike, limits: Limits = wire.DEFAULT_LIMITS, timeout: float = 600.0,
                 max_bytes: int = 2 * 1024**3) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.counters: Counter[str] = Counter()
        self._recent: OrderedDict[bytes, None] = OrderedDict()  # completed message ids (late duplicates)
        self._tag = f"{os.getpid()}-{os.urandom(3).hex()}"
        self._lock = threading.Lock()

    def add(self, source: str, chunk: Chunk) -> bytes | None:
        """The whole message once `chunk` completes it, else None. WireError on inconsistent chunks."""
        if chunk.count == 1:
            if len(chunk.data) != chunk.total:
                raise WireError("bad_chunk_size", f"single chunk of {len(chunk.data)} != {chunk.total}")
            return chunk.data
        # Count and total are part of the key: a re-send after the sender shrank its chunk size has
        # another layout and must not mix with the stale partial of the first attempt, and no
        # metadata file is needed (nothing to race on between workers).
        key = f"{source.encode().hex()}-{chunk.message_id.hex()}-{chunk.count}-{chunk.total}"
        with self._lock:
            late = chunk.message_id in self._recent
        if late:
            self.counters["late_duplicate_chunks"] += 1
            return None
        folder = self.dir / key
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{chunk.index}.{self._tag}.{threading.get_ident()}"
        try:
            tmp.write_bytes(chunk.data)
            os.replace(tmp, folder / str(chunk.index))
            present = sum(1 for n in os.listdir(folder) if n.isdigit())
        except FileNotFoundError:
            return None  # another worker claimed the folder: it had every chunk, ours was a duplicate
        if present < chunk.count:
            return None
        claimed = self.dir / f".assembling-{key}-{self._tag}"
        try:
            os.rename(folder, claimed)
        except FileNotFoundError:
            return None  # another worker won
        return self.assemble(claimed, chunk.message_id)

    def assemble(self, folder: Path, message_id: bytes | None = None) -> bytes | None:
        """Join a claimed folder's chunks (then delete it); None and counted if inconsistent."""
        try:
            # .assembling-<source hex>-<message id>-<count>-<total>-<pid>-<random>
            count, total = (int(x) for x in folder.name.rsplit("-", 4)[1:3])
            parts = [(folder / str(i)).read_bytes() for i in range(count)]
        except (FileNotFoundError, ValueError):
            self.counters["partial_corrupt"] += 1
            shutil.rmtree(folder, ignore_errors=True)
            return None
        except OSError:
            # An I/O error, not a bad message: its chunks were acknowledged already, so deleting them
            # would lose it. Put the folder back; the caller does not acknowledge this chunk, and its
            # redelivery completes the message again (leftovers are retried at the next start).
            self.counters["partial_read_errors"] += 1
            if message_id is not None:
                key = folder.name[len(".assembling-"):].rsplit("-", 2)[0]
                try:
                    os.rename(folder, self.dir / key)
                except OSError:
                    pass
            raise
        shutil.rmtree(folder, ignore_errors=True)
        data = b"".join(parts)
        if message_id is not None:
            with self._lock:
                self._recent[message_id] = None
                while len(self._recent) > 10000:
                    self._recent.popitem(last=False)
        if len(data) != total:
            raise WireError("bad_chunk_size", f"assembled {len(data)} bytes, header said {total}")
        return data

    def forget(self, message_id: bytes) -> None:
        """A completed message could not be stored (disk full): its redelivered chunks are not late
        duplicates, they must assemble again."""
        with self._lock:
            self._recent.pop(message_id, None)

    def leftovers(self) -> list[Path]:
        """Claimed folders of a process that died mid-assembly (process them again at startup)."""
        out = []
        for p in self.dir.glob(".assembling-*"):
            pid = p.name.rsplit("-", 2)[-2]
            if not pid.isdigit() or not _alive(int(pid)) or int(pid) == os.getpid():
                out.append(p)
        return out

    def expire(self) -> None:
        """Drop partials older than the timeout, and the oldest ones while over the byte budget."""
        now = time.time()
        entries = []
        for p in self.dir.iterdir():
            if p.name.startswith("."):
                continue
            try:
                st = p.stat()
                size = sum(f.stat().st_size for f in p.iterdir())
            except OSError:
                continue
            entries.append((st.st_mtime, size, p))
        entries.sort()
        total = sum(e[1] for e in entries)
        for mtime, size, p in entries:
            if now - mtime > self.timeout:
                self.counters["partial_expired"] += 1
            elif total > self.max_bytes:
                self.counters["partial_over_budget"] += 1
            else:
                continue
            shutil.rmtree(p, ignore_errors=True)
            total -= size

    def partials(self) -> int:
        return sum(1 for p in self.dir.iterdir() if not p.name.startswith("."))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
