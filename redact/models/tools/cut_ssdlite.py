"""ssdlite_person.onnx without its two TensorFlow `map` loops: ssdlite_person_cut.onnx.

The converted TF1 graph runs two ONNX Loop ops per image (profiled, 1 thread, 300×300: ~4 of ~28
CPU-ms): `Preprocessor/map` resizes each image to 300×300 — our input already is 300×300, so it copies
— and `Postprocessor/BatchMultiClassNonMaxSuppression/map` runs NMS in ~220 small ops. This removes
both: the preprocessor's outputs become the image itself (NCHW, clipped to 0-255 and cast as the graph did) and its true shape
(a constant [300, 300, 3]); the graph ends at the decoded boxes (`boxes` [1, N, 1, 4], ymin, xmin,
ymax, xmax as fractions, clipped to the image by the graph) and their person scores after the sigmoid
(`scores` [1, N, 1]). NMS moves to the `ssd_raw` decoder (redact/decoders/ssd.py: OpenCV's greedy NMS at
the graph's IoU threshold, read here and written to the card). Run once, never at run time:
    python redact/models/tools/cut_ssdlite.py            (onnx 1.23.2; checks the sha256 in and out)
Checked by tests/test_ssd_cut.py: same detections as the source on synthetic frames and the astronaut.
"""

import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parents[1]
SRC, DST = HERE / "ssdlite_person.onnx", HERE / "ssdlite_person_cut.onnx"
SRC_SHA = "7bfea888087d026b1cfa6de51c93b4eaf6f0f7f21c3ccd643613234f5ea009bf"
IOU = "Postprocessor/BatchMultiClassNonMaxSuppression/map/while/MultiClassNonMaxSuppression/non_max_suppression/iou_threshold:0"


def main() -> int:
    data = SRC.read_bytes()
    if hashlib.sha256(data).hexdigest() != SRC_SHA:
        sys.exit(f"{SRC}: unexpected sha256 (not the shipped conversion)")
    m = onnx.load_from_string(data)
    g = m.graph
    pre = next(n for n in g.node if n.op_type == "Loop" and "Preprocessor" in n.input[1])
    iou = next((numpy_helper.to_array(i) for i in g.initializer if i.name == IOU), None)
    if iou is None:
        iou = next(numpy_helper.to_array(n.attribute[0].t) for n in g.node if n.op_type == "Constant" and n.output[0] == IOU)
    # The resized images (NCHW inside the loop) = the input, as the graph saw it (clipped to 0-255, whole).
    for k, n in enumerate([helper.make_node("Clip", ["image", "crowdcap_lo", "crowdcap_hi"], ["crowdcap_nchw_clip"]),
                   helper.make_node("Cast", ["crowdcap_nchw_clip"], ["crowdcap_nchw_u8"], to=TensorProto.UINT8),
                   helper.make_node("Cast", ["crowdcap_nchw_u8"], ["crowdcap_nchw"], to=TensorProto.FLOAT)]):
        g.node.insert(k, n)
    rename = {pre.output[2]: "crowdcap_nchw"}
    g.initializer.append(numpy_helper.from_array(np.array([[300, 300, 3]], np.int32), "crowdcap_true_shape"))
    rename[pre.output[3]] = "crowdcap_true_shape"
    for n in g.node:
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
    g.node.remove(pre)
    outs = {"Postprocessor/ExpandDims_1:0": "boxes", "Postprocessor/Slice:0": "scores"}
    for n in g.node:
        n.output[:] = [outs.get(o, o) for o in n.output]
        n.input[:] = [outs.get(i, i) for i in n.input]
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, None, 1, 4]),
                     helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, None, 1])])
    # Keep only what the two outputs need (the NMS loop and everything after it go).
    need, keep = {"boxes", "scores"}, []
    for n in reversed(list(g.node)):
        if any(o in need for o in n.output):
            keep.append(n)
            need.update(n.input)
            for a in n.attribute:  # subgraphs (none left on this path) would read outer names too
                if a.type == onnx.AttributeProto.GRAPH:
                    need.update(i for b in a.g.node for i in b.input)
    del g.node[:]
    g.node.extend(_sorted(list(reversed(keep)), {i.name for i in g.input} | {i.name for i in g.initializer}))
    used = {i for n in g.node for i in n.input}
    inits = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.value_info[:]  # shapes recorded by the conversion; onnxruntime infers them again
    m.metadata_props.append(onnx.StringStringEntryProto(key="crowdcap_nms_iou", value=f"{float(iou):.6g}"))
    onnx.checker.check_model(m)
    out = m.SerializeToString()
    DST.write_bytes(out)
    print(DST, hashlib.sha256(out).hexdigest(), "nms iou", float(iou),
          "loops left", sum(n.op_type == "Loop" for n in g.node))
    return 0


def _sorted(nodes: list, known: set) -> list:
    """The nodes in an order where each reads only names already made (the appended ones came last)."""
    out, left = [], list(nodes)
    while left:
        ready = [n for n in left if all(not i or i in known for i in n.input)]
        if not ready:
            missing = sorted({i for n in left for i in n.input if i and i not in known} - {o for n in left for o in n.output})
            sys.exit(f"cut_ssdlite: the graph has a cycle or an unknown input: {missing[:5]}")
        for n in ready:
            out.append(n)
            known.update(n.output)
            left.remove(n)
    return out


if __name__ == "__main__":
    sys.exit(main())
