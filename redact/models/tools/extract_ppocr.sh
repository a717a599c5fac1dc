#!/usr/bin/env bash
# Take the PP-OCRv4 text detector and recogniser (Apache-2.0) out of the rapidocr-onnxruntime 1.4.4
# wheel, once, reproducibly: the files are committed as redact/models/ppocr_det.onnx and
# ppocr_rec.onnx beside their cards; nothing is fetched at run time or in CI.
#   redact/models/tools/extract_ppocr.sh [SCRATCH_DIR]
# Checks the sha256 of the wheel going in and of each file coming out (the cards pin the same).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
models="$(dirname "$here")"
scratch="${1:-/tmp/crowdcap-ppocr-extract}"
WHEEL=rapidocr_onnxruntime-1.4.4-py3-none-any.whl
WHEEL_SHA=971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf
DET_SHA=d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9
REC_SHA=48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b
mkdir -p "$scratch"
cd "$scratch"
python3 -m pip download -q --no-deps -d . "rapidocr-onnxruntime==1.4.4"
echo "$WHEEL_SHA  $WHEEL" | sha256sum -c -
python3 - "$WHEEL" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name, out in (("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "ppocr_det.onnx"),
                      ("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "ppocr_rec.onnx")):
        with open(out, "wb") as fh:
            fh.write(z.read(name))
PY
echo "$DET_SHA  ppocr_det.onnx" | sha256sum -c -
echo "$REC_SHA  ppocr_rec.onnx" | sha256sum -c -
cp ppocr_det.onnx ppocr_rec.onnx "$models/"
echo "extract_ppocr: ppocr_det.onnx and ppocr_rec.onnx written to $models" >&2
