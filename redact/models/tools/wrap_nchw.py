"""Give the converted SSD graph the input our detector feeds every model: float32 NCHW RGB 0-255.

tf2onnx keeps TensorFlow's `image_tensor:0` (uint8, NHWC); this prepends Transpose + Cast so the
model takes `image` [1, 3, 300, 300] float32. Run by convert_ssdlite.sh (pinned onnx), never at run time.
    python wrap_nchw.py IN.onnx OUT.onnx
"""

import sys

import onnx
from onnx import TensorProto, helper

src, dst = sys.argv[1], sys.argv[2]
m = onnx.load(src)
g = m.graph
old = g.input[0]
assert old.name == "image_tensor:0", old.name
new_in = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 300, 300])
nodes = [helper.make_node("Transpose", ["image"], ["image_nhwc"], perm=[0, 2, 3, 1], name="crowdcap_nhwc"),
         helper.make_node("Clip", ["image_nhwc", "crowdcap_lo", "crowdcap_hi"], ["image_clip"], name="crowdcap_clip"),
         helper.make_node("Cast", ["image_clip"], [old.name], to=TensorProto.UINT8, name="crowdcap_uint8")]
g.initializer.extend([helper.make_tensor("crowdcap_lo", TensorProto.FLOAT, [], [0.0]),
                      helper.make_tensor("crowdcap_hi", TensorProto.FLOAT, [], [255.0])])
for n in reversed(nodes):
    g.node.insert(0, n)
g.input.remove(old)
g.input.insert(0, new_in)
onnx.checker.check_model(m)
onnx.save(m, dst)
