"""device/memory.py: the device caps glibc's malloc arenas (resident memory of a multi-threaded run)."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

import pytest

from device import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_malloc_arenas_are_capped_once_per_process() -> None:
    code = ("import device.memory as m\n"
            "assert not m._done and m.limit_malloc_arenas() is True and m._done and m.limit_malloc_arenas()\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


_ARENAS = """
import ctypes, os, sys, tempfile, threading
import device.memory as m
assert m.limit_malloc_arenas()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.fopen.restype = ctypes.c_void_p
alive = threading.Barrier(4)  # all four hold a block at once: none can hand its arena to the next
def work():
    p = libc.malloc(1 << 16)
    alive.wait()
    libc.free(ctypes.c_void_p(p))
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
path = os.path.join(tempfile.mkdtemp(), "malloc-info.xml")
fp = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(fp))
libc.fclose(ctypes.c_void_p(fp))
print(open(path).read().count("<heap nr="))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_every_thread_shares_one_arena_by_default() -> None:
    # glibc would give each of these threads an arena of its own (5 heaps; 2 with the old cap of 2):
    # what one stage thread frees must be there for the next one's allocation
    out = subprocess.run([sys.executable, "-c", _ARENAS], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1", out.stdout


def test_without_glibc_it_is_a_no_op_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(*_a: object, **_k: object) -> None:
        raise OSError("no libc here (musl, macOS)")

    monkeypatch.setattr(memory, "_done", False)
    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert memory.limit_malloc_arenas() is False and memory._done is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_hands_freed_heap_back() -> None:
    # 64 × 1 MB below glibc's mmap threshold would stay resident once freed; a trim returns them
    code = ("import device.memory as m, ctypes\n"
            "libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p\n"
            "libc.mallopt(-3, 4 << 20)\n"  # M_MMAP_THRESHOLD 4 MB: 1 MB blocks come from the heap
            "def rss(): return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])\n"
            "ps = [libc.malloc(1 << 20) for _ in range(64)]\n"
            "for p in ps: ctypes.memset(p, 1, 1 << 20)\n"
            "for p in ps[:-1]: libc.free(ctypes.c_void_p(p))\n"  # the last one pins the heap's top
            "before = rss(); ok = m.trim_malloc(); after = rss()\n"
            "print(ok, before - after)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ok, freed_kb = out.stdout.split()
    assert ok == "True" and int(freed_kb) > 32 * 1024, out.stdout


def test_trim_without_glibc_is_a_no_op_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(*_a: object, **_k: object) -> None:
        raise OSError("no libc here (musl, macOS)")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert memory.trim_malloc() is False
