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
