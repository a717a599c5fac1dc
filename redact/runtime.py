"""Load a model card into an onnxruntime session on the CPU provider, with a hard time limit per run.

Preparation (per session; cached on disk with `cache_dir`):
  * weights that the graph also lists as inputs are removed from `graph.input` (CenterFace lists 195):
    onnxruntime can only fold constants that are not overridable inputs — ~2x faster;
  * fixed input/output dims of a dynamic-size model are made symbolic (`update_inputs_outputs_dims`).

Memory: every `Session` of a process takes its activations from one CPU arena registered once in
onnxruntime's environment (`_share_one_arena`); weights are allocated outside it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from redact.cards import ModelCard, read_verified

log = logging.getLogger("crowdcap.redact")

_prepared: dict[str, bytes] = {}  # sha256 of the original file -> prepared model bytes
_prepared_lock = threading.Lock()
_PREP_VERSION = "2"  # bump when preparation changes, so disk caches are not reused


class ModelLoadError(Exception):
    """The model named by a card cannot be loaded (missing, corrupt, wrong hash, bad graph)."""


class ModelRunError(Exception):
    """A model run failed; `reason` is model_error or model_timeout."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def prepare(model_bytes: bytes, card: ModelCard) -> bytes:
    """Model bytes ready for a fast session (see module doc)."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load_from_string(model_bytes)
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(inputs)
    used = _used_names(model.graph) | {o.name for o in model.graph.output}
    unused = [init for init in model.graph.initializer if init.name not in used]
    for init in unused:  # e.g. batch-norm counters: onnxruntime would warn about each one
        model.graph.initializer.remove(init)
    if card.input.size is None:
        # Keep batch and channels of inputs; free the spatial sides and every output dim.
        in_dims: dict[str, list[Any]] = {}
        for i, v in enumerate(model.graph.input):
            d = v.type.tensor_type.shape.dim
            in_dims[v.name] = ["B", d[1].dim_value or "C"] + [f"in{i}_{k}" for k in range(2, len(d))]
        out_dims: dict[str, list[Any]] = {
            v.name: [f"out{i}_{k}" for k in range(len(v.type.tensor_type.shape.dim))]
            for i, v in enumerate(model.graph.output)}
        model = update_inputs_outputs_dims(model, in_dims, out_dims)
    return model.SerializeToString()


def _used_names(graph: Any) -> set[str]:
    """Every tensor name a node reads, subgraphs (Loop, If bodies) included: they read outer names."""
    used = set()
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                used |= _used_names(sub)
    return used


def prepared_bytes(card: ModelCard, cache_dir: str = "") -> bytes:
    """Verified and prepared bytes of the card's model (memory cache, then disk cache, then build)."""
    original = read_verified(card)  # always: the file on disk must still be the one the card pins
    with _prepared_lock:
        hit = _prepared.get(card.sha256)
    if hit is not None:
        return hit
    cache_file = Path(cache_dir) / f"{card.sha256}.v{_PREP_VERSION}.onnx" if cache_dir else None
    data: bytes | None = None
    if cache_file is not None and cache_file.is_file():
        data = cache_file.read_bytes()
        # A corrupt cache (SD card) would fail to load, or run altered weights, on every start until
        # someone deleted it: it must match the digest written beside it, else it is rebuilt.
        try:
            ok = cache_file.with_suffix(".sha256").read_text().strip() == hashlib.sha256(data).hexdigest()
        except OSError:
            ok = False
        if not ok:
            log.warning("model cache %s does not match its digest; rebuilding it", cache_file)
            data = None
    if data is None:
        try:
            data = prepare(original, card)
        except Exception as e:  # onnx raises many types for a corrupt protobuf
            raise ModelLoadError(f"{card.file}: not a loadable ONNX model ({type(e).__name__}: {e})") from None
        if cache_file is not None:
            try:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache_file.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(cache_file)
                tmp.write_text(hashlib.sha256(data).hexdigest() + "\n")
                tmp.replace(cache_file.with_suffix(".sha256"))
            except OSError as e:
                log.warning("model cache %s not written: %s", cache_file, e)
    # Not kept in `_prepared` (a process-long memory cache): the session has its own copy of the weights,
    # and these bytes stayed resident beside it (~24 MB for the default models: the demo's device peak RSS).
    # Preparing again costs ~20-90 ms per model (after onnx's import); `cache_dir` keeps it on disk.
    return data


_shared_arena: bool | None = None  # registered in this process's onnxruntime environment (None: not tried)
_shared_arena_lock = threading.Lock()


def _share_one_arena(ort: Any, opts: Any) -> bool:
    """Run `opts`' session on one CPU arena shared by every session of this process (registered once).

    Without any arena each run's activations are malloc'd and freed: glibc keeps the freed megabytes
    resident until the next trim (device/memory.py) and faults them in again after it. A per-session
    arena keeps each model's largest activations for good (see `enable_cpu_mem_arena` below); one
    shared arena holds what the models running at once need, reused run after run. Weights stay out of
    it (the device allocator): they are there for good anyway. False (each session as before) where
    this onnxruntime cannot register a shared allocator.

    `bench e2e --sources demo --paths new_default --seconds 12` (one malloc arena, device/memory.py),
    interleaved: device peak RSS 360-387 MB on malloc, 339-359 with the shared arena (7 runs), which
    holds ~50-65 MB (malloc in use at the peak 112-141 → 167-202 MB) but ~70-150 MB less freed-and-
    resident heap; page faults per run ~300k → ~150-220k; CPU-ms per frame within the runs' noise. 45 s:
    peak 423 → 401 MB, the arena's share flat after the first seconds (the keyframes kept for fusion,
    depth.max_keyframes, grow either way)."""
    global _shared_arena
    with _shared_arena_lock:
        if _shared_arena is None:
            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                # max_mem 0 (no cap), extend by what is asked for (1: not the next power of two), defaults
                ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
                _shared_arena = True
            except Exception as e:  # an onnxruntime without it: every session on malloc, as before
                log.debug("no shared onnxruntime arena: %s", e)
                _shared_arena = False
    if _shared_arena:
        opts.add_session_config_entry("session.use_env_allocators", "1")
        opts.add_session_config_entry("session.use_device_allocator_for_initializers", "1")
    return _shared_arena


class Session:
    """One onnxruntime session on CPUExecutionProvider; a run is stopped when its RunOptions say so.

    ORT_ENABLE_ALL: 1.9× faster than EXTENDED for the fp32 RetinaFace (NCHWc layout, fused
    Conv+LeakyRelu), ~1.1× for the int8 ones (NHWC QLinearConv), 2.6× faster than BASIC (640×480,
    1 thread, CPU-ms, one run, see redact/README.md)."""

    def __init__(self, card: ModelCard, threads: int, cache_dir: str = "") -> None:
        import onnxruntime as ort

        self.card = card
        data = prepared_bytes(card, cache_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # unused-initializer warnings would flood stderr
        # Memory patterns are cached per input shape (tiles, mosaics and crops vary): ~50 MB of RSS in a
        # demo run for no measurable CPU (branch objects, issue 13).
        opts.enable_mem_pattern = False
        # No CPU arena: it keeps each session's largest activations resident for good (RetinaFace
        # 640×480 ~19 MB, PP-OCR det ~23 MB, CenterFace ~19 MB); freed instead, the device's peak RSS
        # in the demo fell ~30-50 MB. CPU-ms per run (thread time, best of 5×5, load ~5): RetinaFace int8
        # 640×480 21-22 → 15; PP-OCR det 512×384 43-46 → 46-52; CenterFace 384×288 16.5-17 → 15-16.
        opts.enable_cpu_mem_arena = False
        _share_one_arena(ort, opts)
        # With 2+ intra-op threads, idle workers spin-wait after each run and burn a core the rest of
        # the device needs: RetinaFace 640×480 with 2 threads cost 35.8 CPU-ms per run spinning, 19.4
        # without (fp32; int8 30.3 vs 23.3; same run, load 8 on 2 cores). No effect with 1 thread.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelLoadError(f"{card.file}: onnxruntime cannot load it ({type(e).__name__}: {e})") from None
        if getattr(self._sess, "_model_bytes", None) is not None:
            # onnxruntime keeps the model bytes for a provider fallback (GPU providers only; its own
            # TODO says it holds the memory for good): on the CPU provider they are only resident weight
            self._sess._model_bytes = None
        inputs = self._sess.get_inputs()
        names = [i.name for i in inputs]
        self.input_name = card.input.name or names[0]
        if self.input_name not in names:
            raise ModelLoadError(f"{card.card_path}: input.name: graph has no input {self.input_name!r} "
                                 f"(inputs: {', '.join(names)})")
        self.output_names = [o.name for o in self._sess.get_outputs()]
        self._ort = ort

    def metadata(self) -> dict[str, str]:
        """The model file's custom metadata (e.g. a recogniser's character list)."""
        return dict(self._sess.get_modelmeta().custom_metadata_map)

    def run(self, blob: np.ndarray, run_options: Any) -> dict[str, np.ndarray]:
        """Outputs by name. `run_options.terminate` (set by a deadline timer) stops the run."""
        try:
            outs = self._sess.run(None, {self.input_name: blob}, run_options)
        except Exception as e:
            if run_options.terminate:
                raise ModelRunError("model_timeout", f"{self.card.name}: run stopped at the frame deadline") from None
            raise ModelRunError("model_error", f"{self.card.name}: {type(e).__name__}: {str(e)[:200]}") from None
        return dict(zip(self.output_names, outs, strict=True))
