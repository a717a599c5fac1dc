"""Fold PP-OCRv4's learnable affine blocks and decomposed hard-swish into plain ops: the same detector,
computed with fewer, larger kernels.

    python redact/models/tools/fuse_ppocr_det.py [--model det|rec] [--src FILE] [--out FILE]

det: ppocr_det.onnx → ppocr_det_fused.onnx; rec: ppocr_rec.onnx → ppocr_rec_fused.onnx (the
recogniser has the same PP-LCNetV3 backbone; its character list, ONNX metadata, is kept).

PP-LCNetV3 (the detector's backbone), as exported by paddle2onnx, follows every convolution by a
scalar affine `x·a + b`, spells hard-swish as Add(3) → Clip(0, 6) → Mul(x) → Div(6), and follows that
by another scalar affine: ~40 % of the detector's time was these element-wise ops and the layout
reorders around them (onnxruntime profile, 512×384). The rewrite, exact in real arithmetic:
  * Conv → Mul(const) / Add(const) / Div(const), per-tensor or per-channel, output used once: folded
    into the convolution's weights and bias (repeatedly, so an affine chain folds whole);
  * Add(3) → Clip(0, 6) → Mul(x, ·) → Div(6) → one `HardSwish` (opset 14);
  * Mul(const) / Add(const) right before a convolution without padding (a 1×1 pointwise one), used
    only by it: folded into that convolution (W·a, bias + b·ΣW). Before a padded convolution it stays:
    the zero padding would no longer be zero in the folded domain.
The result must give the same output as the source (max |Δ| ≤ 1e-3 on a real photo and a synthetic
frame, and for the recogniser the same best character at every step; checked here) and its sha256
must be the one in `MODELS` (onnx 1.23.2; the card pins it).
Reproducible: no randomness, no calibration; run it again and compare the hash.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parents[1]
ONNX_VERSION = "1.23.2"
# model → (source file, its sha256 (the card's), fused file, the fused file's sha256 — a rerun must reproduce it)
MODELS = {
    "det": ("ppocr_det.onnx", "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
            "ppocr_det_fused.onnx", "d50307c42f3ce424067a1b9a7104079dea85063a123614a8496da167515a0a6a"),
    "rec": ("ppocr_rec.onnx", "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
            "ppocr_rec_fused.onnx", "4c64ef792f8efcfb948fd4687c2ebb3ba878b9b352c0e9e0df15d0d57ab80862"),
}
MAX_DIFF = 1e-3


def _consts(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def fuse(model: Any) -> tuple[Any, dict[str, int]]:
    """The rewritten model (opset 14) and how many of each rewrite were made."""
    import onnx
    from onnx import helper, numpy_helper, version_converter

    model = version_converter.convert_version(model, 14)  # HardSwish is opset 14
    g = model.graph
    consts = _consts(g)
    nodes = [n for n in g.node if n.op_type != "Constant"]
    outputs = {o.name for o in g.output}
    counts: dict[str, int] = defaultdict(int)
    new_init: dict[str, np.ndarray] = {}

    def users() -> dict[str, list[Any]]:
        u: dict[str, list[Any]] = defaultdict(list)
        for n in nodes:
            for i in n.input:
                u[i].append(n)
        return u

    def const_of(n: Any) -> tuple[np.ndarray | None, str]:
        """(the constant operand, the other input) of a binary element-wise node."""
        a, b = n.input
        if a in consts and b not in consts:
            return consts[a], b
        if b in consts and a not in consts:
            return consts[b], a
        return None, ""

    def weights(conv: Any) -> tuple[np.ndarray, np.ndarray]:
        w = consts[conv.input[1]].astype(np.float64)
        b = consts[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0])
        return w, b

    def set_weights(conv: Any, w: np.ndarray, b: np.ndarray) -> None:
        wn, bn = f"{conv.output[0]}__w", f"{conv.output[0]}__b"
        consts[wn] = new_init[wn] = w.astype(np.float32)
        consts[bn] = new_init[bn] = b.astype(np.float32)
        del conv.input[1:]
        conv.input.extend([wn, bn])

    def per_channel(c: np.ndarray, channels: int) -> np.ndarray | None:
        """A constant as a per-output-channel vector, if it broadcasts as one (scalar or [C,1,1])."""
        c = np.asarray(c, np.float64)
        if c.size == 1:
            return np.full(channels, float(c.ravel()[0]))
        if c.size == channels and (c.ndim <= 1 or c.shape[-2:] == (1, 1) or c.ndim == 4 and c.shape[1] == channels):
            return c.ravel()
        return None

    # 1. Conv followed by affine constants: fold into the conv.
    changed = True
    while changed:
        changed = False
        u = users()
        for conv in [n for n in nodes if n.op_type == "Conv"]:
            nxt = u.get(conv.output[0], [])
            if len(nxt) != 1 or conv.output[0] in outputs or nxt[0].op_type not in ("Mul", "Add", "Div"):
                continue
            op = nxt[0]
            c, other = const_of(op)
            if c is None or other != conv.output[0]:
                continue
            w, b = weights(conv)
            v = per_channel(c, w.shape[0])
            if v is None:
                continue
            if op.op_type == "Div" and op.input[0] != other:
                continue  # const / x is not affine
            if op.op_type == "Mul":
                w, b = w * v[:, None, None, None], b * v
            elif op.op_type == "Div":
                w, b = w / v[:, None, None, None], b / v
            else:
                b = b + v
            set_weights(conv, w, b)
            conv.output[0] = op.output[0]  # the conv now computes what the op did
            nodes.remove(op)
            counts[f"conv_{op.op_type.lower()}"] += 1
            changed = True
            break

    # 2. Decomposed hard-swish → HardSwish.
    u = users()
    for add in [n for n in nodes if n.op_type == "Add"]:
        c, x = const_of(add)
        if c is None or c.size != 1 or float(c.ravel()[0]) != 3.0:
            continue
        clip = u.get(add.output[0], [])
        if len(clip) != 1 or clip[0].op_type != "Clip":
            continue
        clip = clip[0]
        lo, hi = consts.get(clip.input[1]), consts.get(clip.input[2]) if len(clip.input) > 2 else None
        if lo is None or hi is None or float(lo) != 0.0 or float(hi) != 6.0:
            continue
        mul = u.get(clip.output[0], [])
        if len(mul) != 1 or mul[0].op_type != "Mul" or set(mul[0].input) != {x, clip.output[0]}:
            continue
        mul = mul[0]
        div = u.get(mul.output[0], [])
        if len(div) != 1 or div[0].op_type != "Div" or div[0].input[0] != mul.output[0]:
            continue
        div = div[0]
        d = consts.get(div.input[1])
        if d is None or d.size != 1 or float(d.ravel()[0]) != 6.0:
            continue
        hs = helper.make_node("HardSwish", [x], [div.output[0]], name=f"{div.name}_hardswish")
        at = nodes.index(div)
        for n in (add, clip, mul, div):
            nodes.remove(n)
        nodes.insert(at - 3, hs)
        counts["hardswish"] += 1
        u = users()

    # 3. Affine constants right before an unpadded convolution: fold into that convolution.
    changed = True
    while changed:
        changed = False
        u = users()
        for op in [n for n in nodes if n.op_type in ("Mul", "Add")]:
            c, x = const_of(op)
            if c is None or c.size != 1:
                continue
            nxt = u.get(op.output[0], [])
            if len(nxt) != 1 or nxt[0].op_type != "Conv" or nxt[0].input[0] != op.output[0]:
                continue
            conv = nxt[0]
            pads = [a for a in conv.attribute if a.name == "pads"]
            auto = [a for a in conv.attribute if a.name == "auto_pad"]
            if (pads and any(helper.get_attribute_value(pads[0]))) or (auto and helper.get_attribute_value(auto[0])
                                                                         not in (b"NOTSET", b"VALID")):
                continue
            w, b = weights(conv)
            v = float(c.ravel()[0])
            if op.op_type == "Mul":
                w = w * v
            else:
                b = b + v * w.sum(axis=(1, 2, 3))
            set_weights(conv, w, b)
            conv.input[0] = x
            nodes.remove(op)
            counts[f"{op.op_type.lower()}_conv"] += 1
            changed = True
            break

    used = {i for n in nodes for i in n.input}
    keep_const = [n for n in g.node if n.op_type == "Constant" and n.output[0] in used]
    inits = [i for i in g.initializer if i.name in used and i.name not in new_init]
    inits += [numpy_helper.from_array(v, k) for k, v in new_init.items() if k in used]
    del g.node[:]
    g.node.extend(keep_const + nodes)
    del g.initializer[:]
    g.initializer.extend(inits)
    onnx.checker.check_model(model)
    return model, dict(counts)


def _check_inputs(which: str) -> list[np.ndarray]:
    """Real and synthetic inputs: scikit-image's `page` (as the text pass would see it, or its first
    lines as the recogniser's 48-px strips) and a synthetic frame."""
    import cv2
    import skimage.data

    from capture.synthetic import SyntheticSource

    page = cv2.cvtColor(skimage.data.page(), cv2.COLOR_GRAY2BGR)
    src = SyntheticSource(640, 480, pace="fast", n_frames=10)
    src.open()
    frame = None
    while (f := src.read()) is not None:
        frame = f.color
    assert frame is not None
    if which == "det":
        imgs = [cv2.resize(page, (512, 192)), cv2.resize(frame, (512, 384), interpolation=cv2.INTER_AREA)]
    else:
        imgs = [cv2.resize(page[0:40, 0:300], (320, 48)), cv2.resize(page[40:80, 0:300], (320, 48)),
                cv2.resize(frame[200:260, 100:500], (320, 48), interpolation=cv2.INTER_AREA)]
    blobs = [cv2.dnn.blobFromImage(i, scalefactor=1 / 127.5, mean=(127.5,) * 3) for i in imgs]
    return blobs if which == "det" else [np.concatenate(blobs)]


def max_diff(a: bytes, b: bytes, which: str = "det") -> float:
    import onnxruntime as ort

    sa = ort.InferenceSession(a, providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(b, providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in _check_inputs(which):
        pa = sa.run(None, {"x": x})[0]
        pb = sb.run(None, {"x": x})[0]
        worst = max(worst, float(np.abs(pa - pb).max()))
        if which == "rec" and not np.array_equal(pa.argmax(axis=2), pb.argmax(axis=2)):
            return float("inf")  # another character somewhere: not the same recogniser
    return worst


def main(argv: list[str] | None = None) -> int:
    import onnx

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="det", help="the detector or the recogniser")
    ap.add_argument("--src", type=Path, help="default: redact/models/<source file>")
    ap.add_argument("--out", type=Path, help="default: redact/models/<fused file>")
    args = ap.parse_args(argv)
    src_name, src_sha, out_name, out_sha = MODELS[args.model]
    src_path, out_path = args.src or HERE / src_name, args.out or HERE / out_name
    if onnx.__version__ != ONNX_VERSION:
        print(f"fuse_ppocr_det: onnx {onnx.__version__}, pinned {ONNX_VERSION}: the output hash may differ",
              file=sys.stderr)
    src = src_path.read_bytes()
    if hashlib.sha256(src).hexdigest() != src_sha:
        sys.exit(f"fuse_ppocr_det: {src_path}: sha256 is not the PP-OCRv4 {args.model}'s ({src_sha})")
    model, counts = fuse(onnx.load_from_string(src))
    out = model.SerializeToString()
    diff = max_diff(src, out, args.model)
    if diff > MAX_DIFF:
        sys.exit(f"fuse_ppocr_det: the fused model's output differs by {diff:.2e} (> {MAX_DIFF})")
    digest = hashlib.sha256(out).hexdigest()
    if out_sha and digest != out_sha:
        sys.exit(f"fuse_ppocr_det: output sha256 {digest}, expected {out_sha}")
    out_path.write_bytes(out)
    print(f"fuse_ppocr_det: {out_path} ({len(out)} bytes, sha256 {digest}); rewrites {counts}; "
          f"max |Δ output| {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
