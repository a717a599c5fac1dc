#!/usr/bin/env bash
# Convert MediaPipe's Apache-2.0 selfie/person segmenter (general 256×256 model) shipped in the
# mediapipe 0.10.21 wheel to ONNX, once, reproducibly. Never run at run time or in CI: the ONNX file it
# writes is committed (redact/models/selfie_segmentation.onnx) with its card (selfie_segmentation.toml)
# and licence (LICENSE.selfie_segmentation.txt).
#   redact/models/tools/convert_selfie.sh [SCRATCH_DIR]
# mediapipe itself is never installed (it pins numpy/protobuf and pulls opencv-contrib): its wheel is
# downloaded --no-deps and unzipped. Needs ~1.6 GB in SCRATCH_DIR for a throw-away venv (tensorflow-cpu
# + tf2onnx). Checks the sha256 of the wheel and of the .tflite going in; tf2onnx leaves MediaPipe's
# custom op Convolution2DTransposeBias, which fix_selfie.py replaces by a standard ConvTranspose
# (2×2, stride 2, + bias) and then checks against TensorFlow's own TFLite interpreter (max |diff|).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
models="$(dirname "$here")"
scratch="${1:-/work/scratch/masks}"
WHEEL=mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl
WHEEL_SHA=05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3
TFLITE_SHA=9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c
mkdir -p "$scratch"
cd "$scratch"
[ -x venv/bin/python ] || python3.11 -m venv venv
venv/bin/pip install -q "tensorflow-cpu==2.15.1" "tf2onnx==1.16.1" "onnx==1.16.2" "protobuf==3.20.3" \
  "numpy==1.26.4" "onnxruntime==1.20.1"
venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_28_x86_64 -d wheel "mediapipe==0.10.21"
echo "$WHEEL_SHA  wheel/$WHEEL" | sha256sum -c -
rm -rf unpacked && mkdir unpacked
(cd unpacked && unzip -q "../wheel/$WHEEL" 'mediapipe/modules/selfie_segmentation/*' 'mediapipe-0.10.21.dist-info/*')
tflite=unpacked/mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite
echo "$TFLITE_SHA  $tflite" | sha256sum -c -
venv/bin/python -m tf2onnx.convert --tflite "$tflite" --output selfie_raw.onnx --opset 14
venv/bin/python "$here/fix_selfie.py" selfie_raw.onnx selfie_segmentation.onnx "$tflite"
sha256sum selfie_segmentation.onnx
if [ -f "$models/selfie_segmentation.onnx" ]; then
  # tf2onnx names generated nodes differently on every run: compare what the graphs compute.
  venv/bin/python "$here/fix_selfie.py" --compare selfie_segmentation.onnx "$models/selfie_segmentation.onnx"
  echo "convert_selfie: the committed file is kept (its sha256 is pinned by selfie_segmentation.toml)"
  exit 0
fi
cp selfie_segmentation.onnx "$models/selfie_segmentation.onnx"
cp unpacked/mediapipe-0.10.21.dist-info/LICENSE "$models/LICENSE.selfie_segmentation.txt"
grep -q "$(sha256sum selfie_segmentation.onnx | cut -d' ' -f1)" "$models/selfie_segmentation.toml" 2>/dev/null \
  && echo "convert_selfie: output matches the card's sha256" \
  || echo "convert_selfie: NOTE: output hash differs from the card (or no card yet): update sha256 in selfie_segmentation.toml"
