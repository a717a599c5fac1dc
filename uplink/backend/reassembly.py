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
                 max_bytes: int = 2 * 1024**3, max_partials: int = 8192, device_max_bytes: int = 512 * 1024**2,
                 device_max_partials: int = 1024) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_partials = max_partials
        self.device_max_bytes = device_max_bytes
        self.device_max_partials = device_max_partials
        self.counters: Counter[str] = Counter()
        self._recent: OrderedDict[bytes, None] = OrderedDict()  # completed message ids (late duplicates)
        self._tag = f"{os.getpid()}-{os.urandom(3).hex()}"
        self._lock = threading.Lock()
        # key -> [source, bytes, created (wall clock)], oldest first; per-source [partials, bytes]
        self._index: OrderedDict[str, list] = OrderedDict()
        self._per_source: dict[str, list[int]] = {}
        self._bytes = 0
        self._pruned: dict[str | None, float] = {}
        self._load_index()

    def _load_index(self) -> None:
        """Partials left on disk by an earlier run count against the caps (and expire) too."""
        entries = []
        for p in self.dir.iterdir():
            if p.name.startswith("."):
                continue
            try:
                size = sum(f.stat().st_size for f in p.iterdir())
                entries.append((p.stat().st_mtime, p.name, size))
            except OSError:
                continue
            if len(entries) > 10 * self.max_partials:  # a directory flooded before the caps existed
                break
        for mtime, name, size in sorted(entries):
            try:
                total = int(name.split("-")[3])
            except (IndexError, ValueError):
                total = size
            self._track(name, _source_hex(name), size, mtime, total)

    def _track(self, key: str, source: str, size: int, created: float, reserve: int = 0) -> None:
        """Account `size` written bytes under `key`; a new key also reserves its declared total."""
        entry = self._index.get(key)
        per = self._per_source.setdefault(source, [0, 0])  # [partials, reserved bytes]
        if entry is None:
            self._index[key] = [source, size, created, max(reserve, size)]
            per[0] += 1
            per[1] += max(reserve, size)
        else:
            entry[1] += size
        self._bytes += size

    def _untrack(self, key: str) -> None:
        entry = self._index.pop(key, None)
        if entry is None:
            return
        source, size, _, reserved = entry
        self._bytes -= size
        per = self._per_source.get(source)
        if per is not None:
            per[0] -= 1
            per[1] -= reserved
            if per[0] <= 0:
                del self._per_source[source]

    def _prune_stale(self, source: str | None, keep: str) -> None:
        """Forget index entries whose folder is gone (completed by another worker sharing DIR), except
        `keep` (being admitted: its folder is made next)."""
        now = time.monotonic()
        if now - self._pruned.get(source, 0.0) < 1.0:
            return  # at most once a second: under a flood at the cap this would be a scan per chunk
        self._pruned[source] = now
        if len(self._pruned) > 10000:
            self._pruned.clear()
        for key in [k for k, e in self._index.items() if (source is None or e[0] == source) and k != keep]:
            if not os.path.isdir(self.dir / key):
                self._untrack(key)

    def _admit(self, key: str, source: str, size: int, total: int) -> list[str]:
        """Account for `size` more bytes under `key` (locked). A new partial reserves its declared
        `total` against the device's byte cap, so a device declaring huge messages is refused at once,
        before any disk I/O. WireError if the device is over its caps; returns the keys of old partials
        to drop to stay within the global caps (actual bytes on disk)."""
        if key not in self._index:
            per = self._per_source.get(source, [0, 0])
            if per[0] >= self.device_max_partials or per[1] + total > self.device_max_bytes:
                self._prune_stale(source, key)  # partials another worker completed are not ours to count
                per = self._per_source.get(source, [0, 0])
            if per[0] >= self.device_max_partials or per[1] + total > self.device_max_bytes:
                self.counters["partial_cap_device"] += 1
                raise WireError("partial_cap_device", f"{source}: {per[0]} partials, {per[1]} bytes reserved, "
                                                      f"a message of {total} bytes")
        self._track(key, source, size, time.time(), total)
        if len(self._index) > self.max_partials or self._bytes > self.max_bytes:
            self._prune_stale(None, key)
        victims = []
        while (len(self._index) > self.max_partials or self._bytes > self.max_bytes) and len(self._index) > 1:
            old = next(iter(self._index))
            if old == key:
                self._index.move_to_end(key)
                continue
            victims.append(old)
            self._untrack(old)
            self.counters["partial_over_budget"] += 1
        return victims

    def add(self, source: str, chunk: Chunk) -> bytes | None:
        """The whole message once `chunk` completes it, else None. WireError on inconsistent chunks."""
        if chunk.count == 1:
            if len(chunk.data) != chunk.total:
                raise WireError("bad_chunk_size", f"single chunk of {len(chunk.data)} != {chunk.total}")
            return chunk.data
        # Count and total are part of the key: a re-send after the sender shrank its chunk size has
        # another layout and must not mix with the stale partial of the first attempt, and no
        # metadata file is needed (nothing to race on between workers).
        key = f"{source.encode().hex()}-{chunk.message_id.hex()}-{chunk.count}-{chunk.total}-{chunk.flags}"
        with self._lock:
            late = chunk.message_id in self._recent
            victims = [] if late else self._admit(key, source.encode().hex(), len(chunk.data), chunk.total)
        if late:
            self.counters["late_duplicate_chunks"] += 1
            return None
        for old in victims:
            shutil.rmtree(self.dir / old, ignore_errors=True)
        folder = self.dir / key
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{chunk.index}.{self._tag}.{threading.get_ident()}"
        try:
            tmp.write_bytes(chunk.data)
            os.replace(tmp, folder / str(chunk.index))
            present = sum(1 for n in os.listdir(folder) if n.isdigit())
        except FileNotFoundError:
            with self._lock:
                self._untrack(key)
            return None  # another worker claimed the folder: it had every chunk, ours was a duplicate
        if present < chunk.count:
            return None
        claimed = self.dir / f".assembling-{key}-{self._tag}"
        try:
            os.rename(folder, claimed)
        except FileNotFoundError:
            return None  # another worker won
        finally:
            with self._lock:
                self._untrack(key)
        return self.assemble(claimed, chunk.message_id)

    def assemble(self, folder: Path, message_id: bytes | None = None) -> bytes | None:
        """Join a claimed folder's chunks (then delete it); None and counted if inconsistent."""
        try:
            # .assembling-<source hex>-<message id>-<count>-<total>-<flags>-<pid>-<random>
            count, total = (int(x) for x in folder.name.rsplit("-", 5)[1:3])
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
        if len(data) != total:
            raise WireError("bad_chunk_size", f"assembled {len(data)} bytes, header said {total}")
        return data

    def forget(self, message_id: bytes) -> None:
        """A completed message could not be stored (disk full): its redelivered chunks are not late
        duplicates, they must assemble again."""
        with self._lock:
            self._recent.pop(message_id, None)

    def completed(self, message_id: bytes) -> None:
        """Remember a stored (verified) message: later chunks of it are late duplicates, not a new
        partial. Called by the ingest after verification, so a forger's copy never blocks the real one."""
        with self._lock:
            self._recent[message_id] = None
            while len(self._recent) > 10000:
                self._recent.popitem(last=False)

    def leftovers(self) -> list[Path]:
        """Claimed folders of a process that died mid-assembly (process them again at startup)."""
        out = []
        for p in self.dir.glob(".assembling-*"):
            pid = p.name.rsplit("-", 2)[-2]
            if not pid.isdigit() or not _alive(int(pid)) or int(pid) == os.getpid():
                out.append(p)
        return out

    def expire(self) -> int:
        """Delete partials older than the timeout (this process's, from the index: no directory scan
        on the hot path); returns how many. Partials of other workers are theirs to expire; a partial
        of a dead process is picked up by `sweep()`."""
        cutoff = time.time() - self.timeout
        gone = []
        with self._lock:
            for key, (_src, _size, created, _reserved) in self._index.items():
                if created > cutoff:
                    break  # oldest first
                gone.append(key)
            for key in gone:
                self._untrack(key)
        for key in gone:
            shutil.rmtree(self.dir / key, ignore_errors=True)
        self.counters["partial_expired"] += len(gone)
        return len(gone)

    def sweep(self) -> int:
        """Delete expired partials found on disk that no index knows (left by a dead or other worker)."""
        cutoff = time.time() - self.timeout
        n = 0
        with self._lock:
            known = set(self._index)
        for p in self.dir.iterdir():
            if p.name.startswith(".") or p.name in known:
                continue
            try:
                if p.stat().st_mtime > cutoff:
                    continue
            except OSError:
                continue
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        self.counters["partial_expired"] += n
        return n

    def partials(self) -> int:
        with self._lock:
            return len(self._index)

    def stats(self) -> dict:
        with self._lock:
            return {"partials": len(self._index), "partial_bytes": self._bytes, "devices": len(self._per_source)}


def parse_claimed(folder: Path) -> tuple[str, bytes, bool]:
    """(device id, message id, signed) of a claimed partial folder, from its name."""
    name = folder.name[len(".assembling-"):]
    try:
        source_hex, mid_hex, _count, _total, flags = name.split("-")[:5]
        return bytes.fromhex(source_hex).decode(), bytes.fromhex(mid_hex), bool(int(flags) & wire.CHUNK_SIGNED)
    except (ValueError, UnicodeDecodeError):
        raise WireError("partial_corrupt", folder.name) from None


def _source_hex(key: str) -> str:
    return key.split("-", 1)[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
