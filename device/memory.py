"""Keep the device process's resident memory near what it uses: glibc malloc arenas.

glibc gives every new thread its own arena while there are fewer than 8 per core. The pipeline's
stage threads each allocate and free whole frames, SIFT pyramids and, without onnxruntime's shared
arena (redact/runtime.py), model activations (megabytes each); what a thread frees stays mapped in that
thread's arena, free for that arena only, so resident memory climbs by tens of MB over a run although
the live data does not (`crowdcap demo`: ~+130 MB during 10 s of redaction, measured in one process).

One arena (the default): every thread reuses what any thread freed. `bench e2e --sources demo --paths
new_default --seconds 12`, interleaved on a shared 2-core host: the device's peak 374-422 MB with 2
arenas (10 runs), 346-410 with 1 (12 runs, median ~360); anonymous RSS at the peak 283-323 → 255-322;
minor page faults in the run ~370-430k → ~265-330k; voluntary context switches (a waiting lock would
add them) and CPU-ms per frame unchanged within the runs' noise (small blocks come from each thread's
tcache without the arena's lock). Big blocks stay on glibc's own (dynamic) mmap threshold: a fixed
threshold returns freed blocks at once but every block is faulted in anew (2 arenas: 256 KB or 1 MB
~355-378 MB peak but ~10× the page faults and +15 CPU-ms per frame; 4 MB ~410 MB, 4× the faults).

Call `limit_malloc_arenas()` first thing in a device process (before its threads start). It is a
no-op where glibc's `mallopt` is missing (musl, macOS) and never raises.

`trim_malloc()` (the running Service calls it from its housekeeping, at most once per second) hands
freed heap pages back to the kernel (glibc `malloc_trim(0)`: the top of each arena and free pages inside
it). Model runs, SIFT pyramids and frame copies free tens of MB per second that glibc otherwise keeps
resident: `crowdcap demo`'s device process settled at ~385 MB instead of ~485 MB after 10 s (one run
each, with onnxruntime's CPU arena off). A trim costs ~2 CPU-ms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("crowdcap.memory")

M_ARENA_MAX = -8  # glibc malloc.h
M_MMAP_THRESHOLD = -3
_done = False


def limit_malloc_arenas(arenas: int = 1, mmap_threshold: int | None = None) -> bool:
    """Cap glibc's malloc arenas for this process (and optionally fix the mmap threshold, in bytes);
    True if it took effect (once per process)."""
    global _done
    if _done:
        return True
    try:
        libc = _load_libc()
        ok = bool(libc.mallopt(M_ARENA_MAX, int(arenas)))
        if mmap_threshold is not None:
            ok = ok and bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)))
    except (OSError, AttributeError) as e:  # not glibc: nothing to tune
        log.debug("malloc arenas not limited: %s", e)
        return False
    _done = ok
    return ok


def _load_libc() -> ctypes.CDLL:  # dlopen of the loaded libc: cheap, and tests can stand in for it
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def trim_malloc() -> bool:
    """Return freed heap memory to the kernel (glibc `malloc_trim(0)`); True if glibc did it. Never raises."""
    try:
        return bool(_load_libc().malloc_trim(0))
    except (OSError, AttributeError) as e:  # not glibc: nothing to trim
        log.debug("malloc not trimmed: %s", e)
        return False
