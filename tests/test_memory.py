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
