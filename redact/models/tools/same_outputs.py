"""Check that two ONNX person detectors give the same outputs on a fixed synthetic image.

tf2onnx's output is not byte-identical from run to run (generated node names), so a fresh conversion
is checked against the committed file by what it computes.   python same_outputs.py A.onnx B.onnx
"""

import sys

import numpy as np
import onnxruntime as ort

rng = np.random.default_rng(0)
img = np.kron(rng.integers(0, 256, (1, 3, 30, 30)), np.ones((1, 1, 10, 10))).astype(np.float32)
outs = []
for path in sys.argv[1:3]:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs.append(s.run(None, {s.get_inputs()[0].name: img}))
for a, b in zip(*outs, strict=True):
    if a.shape != b.shape or not np.allclose(a, b, atol=1e-4):
        sys.exit(f"same_outputs: outputs differ ({a.shape} vs {b.shape})")
print("same_outputs: identical outputs on the check image")
