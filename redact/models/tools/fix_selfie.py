"""Replace MediaPipe's custom op Convolution2DTransposeBias in a tf2onnx'd selfie segmenter, then
check the result against TensorFlow's TFLite interpreter running the original .tflite.

    python fix_selfie.py RAW.onnx OUT.onnx MODEL.tflite   # fix + check (scratch venv: tf, onnx, ort)
    python fix_selfie.py --compare A.onnx B.onnx          # same outputs on fixed images?

The custom op (inputs: x NHWC, weights OHWI, bias) is a 2×2, stride-2 transposed convolution plus
bias; ONNX's ConvTranspose wants NCHW and weights as (in, out, kh, kw), so the node becomes
Transpose → ConvTranspose(+bias) → Transpose (tf2onnx names the node TFL_Convolution2DTransposeBias).

The reference: TensorFlow's TFLite interpreter cannot run the custom op either (MediaPipe registers
it in C++), so the .tflite is cut just before it (its input tensor made the graph output, the custom
op and what follows removed, with TF's own flatbuffer_utils) and run by TFLite; the custom op is then
computed from its definition in numpy (out[2y+i, 2x+j, o] = Σc in[y, x, c]·W[o, i, j, c] + b[o],
then the model's sigmoid) with the weights read from the .tflite. Both the ONNX graph's tensor
before the op (relative to its magnitude, TOL_REL) and its output probability (TOL_PROB) are
compared; exits non-zero above either (float32 kernels sum in a different order: ~1e-5 relative).
"""

import sys
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

CUSTOM = "TFL_Convolution2DTransposeBias"
TOL = 1e-4        # --compare: two ONNX files
TOL_PROB = 1e-3   # output probability vs the reference (float32 accumulation order differs)
TOL_REL = 2e-5    # the tensor before the op, relative to its largest magnitude (~80)


def check_images(h: int, w: int) -> list[np.ndarray]:
    """A few fixed images in [0, 1] (NHWC): noise blocks, a gradient, a bright blob on dark."""
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.random((1, h // 16, w // 16, 3)), np.ones((1, 16, 16, 1)))
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    grad = np.stack([yy, xx, (yy + xx) / 2], -1)[None]
    blob = (((yy - 0.5) ** 2 + (xx - 0.5) ** 2) < 0.08)[None, ..., None] * np.ones((1, 1, 1, 3)) * 0.9
    return [a.astype(np.float32) for a in (blocks, grad, blob)]


def fix(raw: str, out: str) -> None:
    model = onnx.load(raw)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes = []
    n_fixed = 0
    for node in g.node:
        if node.op_type != CUSTOM:
            nodes.append(node)
            continue
        x, w_name, b_name = node.input
        w = numpy_helper.to_array(inits[w_name])  # TFLite transpose-conv weights: (out, kh, kw, in)
        if w.ndim != 4 or w.shape[1:3] != (2, 2):
            sys.exit(f"fix_selfie: {node.name}: unexpected weights {w.shape}")
        w_onnx = np.ascontiguousarray(w.transpose(3, 0, 1, 2))  # (in, out, kh, kw)
        wn = f"{node.name}_W_iokk"
        g.initializer.append(numpy_helper.from_array(w_onnx, wn))
        t_in, t_out = f"{node.name}_nchw", f"{node.name}_nchw_out"
        nodes.append(helper.make_node("Transpose", [x], [t_in], perm=[0, 3, 1, 2], name=f"{node.name}_to_nchw"))
        # (tf2onnx's own NCHW→NHWC Transpose before it and this one cancel; onnxruntime folds them)
        nodes.append(helper.make_node("ConvTranspose", [t_in, wn, b_name], [t_out], kernel_shape=[2, 2],
                                      strides=[2, 2], name=f"{node.name}_convT"))
        nodes.append(helper.make_node("Transpose", [t_out], list(node.output), perm=[0, 2, 3, 1],
                                      name=f"{node.name}_to_nhwc"))
        n_fixed += 1
    if not n_fixed:
        sys.exit(f"fix_selfie: no {CUSTOM} node in {raw}")
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    keep_ops = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep_ops)
    onnx.checker.check_model(model)
    onnx.save(model, out)
    print(f"fix_selfie: replaced {n_fixed} {CUSTOM} node(s) -> {out}")


def run_onnx(path: str, img: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: img})[0]


def tflite_reference(tflite_path: str, scratch: str) -> tuple[Any, np.ndarray, np.ndarray, int]:
    """(TFLite interpreter of the graph cut before the custom op, weights OHWI, bias, custom op index)."""
    import tensorflow as tf
    from tensorflow.lite.tools import flatbuffer_utils as fu

    model = fu.read_model(tflite_path)
    sg = model.subgraphs[0]
    custom = [k for k, op in enumerate(sg.operators)
              if model.operatorCodes[op.opcodeIndex].customCode == CUSTOM[4:].encode()]
    if len(custom) != 1:
        sys.exit(f"fix_selfie: expected one {CUSTOM[4:]} op in the .tflite, found {len(custom)}")
    k = custom[0]
    x_t, w_t, b_t = sg.operators[k].inputs
    # The weights/bias come through DEQUANTIZE ops (fp16 buffers): run those too, and read them out.
    sg.outputs = [x_t, w_t, b_t]
    sg.operators = sg.operators[:k]
    cut = f"{scratch}/selfie_cut.tflite"
    fu.write_model(model, cut)
    interp = tf.lite.Interpreter(model_path=cut, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    return interp, x_t, w_t, b_t


def check_tflite(onnx_path: str, tflite_path: str) -> None:
    import os

    interp, x_t, w_t, b_t = tflite_reference(tflite_path, os.path.dirname(os.path.abspath(onnx_path)))
    inp = interp.get_input_details()[0]
    _, h, w, _ = inp["shape"]
    # The ONNX graph with the custom op's input exposed as an extra output.
    model = onnx.load(onnx_path)
    pre = next(n for n in model.graph.node if n.name.endswith("_convT")).input[0]
    model.graph.output.append(helper.make_empty_tensor_value_info(pre))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    worst_pre = worst = 0.0
    images = check_images(int(h), int(w))
    for img in images:
        interp.set_tensor(inp["index"], img)
        interp.invoke()
        x = interp.get_tensor(x_t)            # NHWC
        wt = interp.get_tensor(w_t)           # (out, 2, 2, in)
        b = interp.get_tensor(b_t)
        y = np.einsum("nyxc,oijc->nyixjo", x, wt).reshape(x.shape[0], 2 * x.shape[1], 2 * x.shape[2], -1) + b
        ref = 0.5 * (1.0 + np.tanh(0.5 * y))  # the sigmoid, without exp overflow
        got, got_pre = sess.run(None, {sess.get_inputs()[0].name: img})
        got_pre = got_pre.transpose(0, 2, 3, 1) if got_pre.shape[1] != x.shape[1] else got_pre
        if ref.shape != got.shape:
            sys.exit(f"fix_selfie: output shape {got.shape} != reference {ref.shape}")
        worst_pre = max(worst_pre, float(np.abs(x - got_pre).max() / np.abs(x).max()))
        worst = max(worst, float(np.abs(ref - got).max()))
    print(f"fix_selfie: on {len(images)} images, max relative |ONNX - TFLite| before the op = {worst_pre:.2e}, "
          f"max |ONNX - reference| of the output probability = {worst:.2e}")
    if worst_pre > TOL_REL or worst > TOL_PROB:
        sys.exit(f"fix_selfie: ONNX differs from the reference (limits {TOL_REL:g} relative, {TOL_PROB:g})")


def compare(a: str, b: str) -> None:
    s = ort.InferenceSession(a, providers=["CPUExecutionProvider"])
    _, h, w, _ = s.get_inputs()[0].shape
    for img in check_images(int(h), int(w)):
        if not np.allclose(run_onnx(a, img), run_onnx(b, img), atol=TOL):
            sys.exit("fix_selfie: outputs differ")
    print("fix_selfie: identical outputs on the check images")


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        fix(sys.argv[1], sys.argv[2])
        check_tflite(sys.argv[2], sys.argv[3])
