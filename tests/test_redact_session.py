"""The onnxruntime session options the face path's CPU cost depends on (redact/runtime.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

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


def _entry(opts: ort.SessionOptions, key: str) -> str | None:
    try:
        return opts.get_session_config_entry(key)
    except RuntimeError:  # onnxruntime: no such entry
        return None


def test_sessions_share_one_arena_and_keep_weights_out_of_it() -> None:
    card = load_card(MODELS / "retinaface-int8.toml")
    for s in (Session(card, threads=1), Session(card, threads=1)):  # the second one registers nothing again
        opts = s._sess.get_session_options()
        # activations from the process's one shared arena, reused run after run (not malloc'd and freed)
        assert _entry(opts, "session.use_env_allocators") == "1"
        assert _entry(opts, "session.use_device_allocator_for_initializers") == "1"
        assert not opts.enable_cpu_mem_arena  # and no arena of its own


def test_without_a_shared_arena_a_session_runs_on_malloc_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    import redact.runtime as runtime

    def refuse(*_a: object) -> None:
        raise RuntimeError("not in this onnxruntime")

    monkeypatch.setattr(runtime, "_shared_arena", None)
    monkeypatch.setattr(ort, "create_and_register_allocator", refuse)
    s = Session(load_card(MODELS / "retinaface-int8.toml"), threads=1)
    assert _entry(s._sess.get_session_options(), "session.use_env_allocators") is None
    out = s.run(np.zeros((1, 3, 64, 64), np.float32), ort.RunOptions())
    assert out and all(np.isfinite(v).all() for v in out.values())
