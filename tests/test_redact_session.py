"""The onnxruntime session options the face path's CPU cost depends on (redact/runtime.py)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from redact.cards import load_card
from redact.runtime import Session

MODELS = Path(__file__).resolve().parents[1] / "redact" / "models"


def test_sessions_do_not_spin_and_optimise_fully() -> None:
    s = Session(load_card(MODELS / "retinaface-int8.toml"), threads=2)
    opts = s._sess.get_session_options()
    # spinning idle workers burn the core the rest of the device needs
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
