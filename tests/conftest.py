"""Shared pytest fixtures. Others may append fixtures at the END of this file."""

from __future__ import annotations

import sys
from collections.abc import Iterator
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
