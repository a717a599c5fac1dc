"""Shared pytest fixtures. Others may append fixtures at the END of this file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import MosquittoBroker  # noqa: E402


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A fresh mosquitto on a free loopback port: .host .port .url .stop() .start() .restart()."""
    b = MosquittoBroker()
    b.start()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`tmpfs("4m")`: a real small filesystem (tmpfs; needs root, else the test is skipped) that a test
    can fill; unmounted at the end. `mount -o remount,size=...` on it grows it."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
