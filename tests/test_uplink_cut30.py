"""The full 30 s link cut from the issue (the 5 s version runs in test_uplink_faults.py)."""

from __future__ import annotations

import pytest
from test_uplink_faults import network_cut


@pytest.mark.slow
def test_network_cut_30s(tmp_path, broker) -> None:
    network_cut(tmp_path, broker, cut_seconds=30.0)
