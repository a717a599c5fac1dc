"""`python -m redact.quantize OUT_DIR [--card CARD] [--frames N] [--calibration synthetic|real]
[--fp32-first N] [--fp32-heads] [--name NAME]`: a static int8 copy of a model (QDQ, per-channel int8
weights, uint8 activations, ranges calibrated by running the float model) plus its card.

Calibration sets:
  * `synthetic` (default, as before): N synthetic frames at 384×288 (one face identity);
  * `real`: real faces the project ships — scikit-image's astronaut and LFW crops, Grace Hopper
    (tests/data/faces/), each hard case of `capture.hard_faces` and synthetic frames, all with seed 1
    (the bench measures seed 0), each at full size and half size (the face path's two pass sizes).

`--fp32-first N` keeps the first N convolutions (and the activations right after them) in float:
in MobileNet-0.25 they run at half the input resolution with 3-16 channels, where onnxruntime's int8
kernels are slower than its float ones (RetinaFace at 640×480: the first conv 10 ms, the first
depthwise conv 8 ms of a 26 ms int8 run, profiled). `--fp32-heads` keeps the detection heads (the
last 1×1 convs into box, score and landmark outputs: few channels, and the scores decide recall) in
float. The output is deterministic for a given onnxruntime version and set: re-running the command
reproduces the file, and the card's sha256, byte for byte (tests/test_redact_quantize.py).

Measured: see each card in redact/models and redact/README.md ("int8").
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from redact.cards import ModelCard, default_card_path, load_card
from redact.runtime import prepared_bytes

CALIBRATION_SEED = 1  # bench redact and the tests measure seed 0: calibrate on other frames


def synthetic_images(n_frames: int, size: tuple[int, int] = (384, 288)) -> list[np.ndarray]:
    """Every 15th frame of the synthetic scene, resized to `size` (the original calibration set)."""
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(pace="fast", n_frames=n_frames * 15)
    src.open()
    out = []
    while (f := src.read()) is not None:
        if f.seq % 15 == 0:
            out.append(cv2.resize(f.color, size, interpolation=cv2.INTER_AREA))
    return out


def real_images() -> list[np.ndarray]:
    """Real faces at the sizes the face path sees them (see the module doc), BGR."""
    import skimage.data

    from capture.hard_faces import CASES, hard_case
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(640, 480, pace="fast", seed=CALIBRATION_SEED, n_frames=40)
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    base = [f.color for f in frames[::10]]
    base += [hard_case(case, frames[:1], CALIBRATION_SEED)[0][0].color for case in CASES]
    photos = [cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)]
    hopper = cv2.imread(str(Path(__file__).resolve().parents[1] / "tests" / "data" / "faces" / "grace_hopper.jpg"))
    if hopper is not None:
        photos.append(hopper)
    lfw = skimage.data.lfw_subset()[:100]
    sheet = np.full((10 * 96 + 24, 10 * 96 + 24), 128, np.uint8)  # 10×10 faces of 72 px, 24 px apart
    for i, face in enumerate(lfw):
        r, c = divmod(i, 10)
        sheet[24 + r * 96:96 + r * 96, 24 + c * 96:96 + c * 96] = cv2.resize(
            (face * 255).astype(np.uint8), (72, 72), interpolation=cv2.INTER_CUBIC)
    photos.append(cv2.cvtColor(sheet, cv2.COLOR_GRAY2BGR))
    out = []
    for img in base + photos:
        out.append(img)
        out.append(cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA))
    return out


def blob(card: ModelCard, img: np.ndarray) -> np.ndarray:
    """The tensor the detector would feed for `img` (padded to the card's multiple, as detector.py)."""
    m = card.input.multiple
    img = cv2.copyMakeBorder(img, 0, -img.shape[0] % m, 0, -img.shape[1] % m, cv2.BORDER_CONSTANT, value=0)
    mean = card.input.mean if isinstance(card.input.mean, tuple) else (card.input.mean,) * 3
    return cv2.dnn.blobFromImage(img, scalefactor=card.input.scale, mean=mean, swapRB=card.input.channels == "rgb")


def float_nodes(model: Any, first: int, heads: bool) -> list[str]:
    """Names of the nodes to keep in float: the first `first` Conv nodes and the activation reading
    each one's output; with `heads`, every Conv whose output reaches a graph output without another
    Conv on the way (through Transpose/Reshape/Concat/Softmax)."""
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    keep = [n.name for n in convs[:first]]
    outs = {o for n in convs[:first] for o in n.output}
    keep += [n.name for n in model.graph.node
             if n.op_type in ("LeakyRelu", "Relu", "PRelu") and n.input and n.input[0] in outs]
    if heads:
        consumers: dict[str, list[Any]] = {}
        for n in model.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        graph_outputs = {o.name for o in model.graph.output}

        def reaches_output(name: str, seen: set[str]) -> bool:
            if name in graph_outputs:
                return True
            for c in consumers.get(name, []):
                if c.op_type == "Conv" or c.name in seen:
                    continue
                seen.add(c.name)
                if any(reaches_output(o, seen) for o in c.output):
                    return True
            return False

        keep += [n.name for n in convs if n.name not in keep and reaches_output(n.output[0], set())]
    return keep


def quantize(card_path: Path, out_dir: Path, n_frames: int = 20, size: tuple[int, int] = (384, 288),
             calibration: str = "synthetic", fp32_first: int = 0, fp32_heads: bool = False,
             name: str = "") -> Path:
    import onnx
    import onnxruntime
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    card = load_card(card_path)
    images = synthetic_images(n_frames, size) if calibration == "synthetic" else real_images()
    blobs = [blob(card, img) for img in images]

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(blobs)

        def get_next(self) -> dict[str, Any] | None:
            b = next(self._it, None)
            return None if b is None else {card.input.name or "input": b}

    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"{card.name}-int8"
    model_path = out_dir / f"{name}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        model = version_converter.convert_version(onnx.load_from_string(prepared_bytes(card)), 13)  # per-channel needs 13
        onnx.save(model, fp32)
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        excluded: list[str] = []
        if fp32_first or fp32_heads:
            pre_model = onnx.load(pre)
            for i, node in enumerate(pre_model.graph.node):  # CenterFace's nodes have no names
                node.name = node.name or f"{node.op_type}_{i}"
            onnx.save(pre_model, pre)
            excluded = float_nodes(pre_model, fp32_first, fp32_heads)
        quantize_static(str(pre), str(model_path), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded)
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    how = (f"#   python -m redact.quantize {out_dir} --card {card_path} "
           + (f"--frames {n_frames}" if calibration == "synthetic" else "--calibration real")
           + (f" --fp32-first {fp32_first}" if fp32_first else "") + (" --fp32-heads" if fp32_heads else "")
           + (f" --name {name}" if name != f"{card.name}-int8" else ""))
    header = [f"# GENERATED from {card_path.name} by (onnxruntime {onnxruntime.__version__}, "
              f"{len(blobs)} calibration tensors, {len(excluded)} nodes kept in float):", how]
    out_card = out_dir / f"{name}.toml"
    # The version names the recipe: two files made differently never share one (manifests record it).
    recipe = "".join([f"-{calibration}" if calibration != "synthetic" else "",
                      f"-fp32first{fp32_first}" if fp32_first else "", "-fp32heads" if fp32_heads else ""])
    version = f"{card.version}-int8{recipe}"
    out_card.write_text("\n".join(header + card_lines(card, name, version, model_path.name, digest)) + "\n")
    return out_card


def card_lines(card: ModelCard, name: str, version: str, file: str, digest: str) -> list[str]:
    """The source card's lines with its own name, version, file and sha256 replaced."""
    lines = []
    top_level = True  # only the card's own fields, not [input] name etc.
    for line in card.card_path.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        top_level = top_level and not line.lstrip().startswith("[")
        if not top_level:
            pass
        elif key == "name":
            line = f'name = "{name}"'
        elif key == "version":
            line = f'version = "{version}"'
        elif key == "file":
            line = f'file = "{file}"'
        elif key == "sha256":
            line = f'sha256 = "{digest}"'
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m redact.quantize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--card", type=Path, default=default_card_path())
    ap.add_argument("--frames", type=int, default=20, help="calibration frames (synthetic calibration)")
    ap.add_argument("--calibration", choices=("synthetic", "real"), default="synthetic",
                    help="calibration images (see above)")
    ap.add_argument("--fp32-first", type=int, default=0, metavar="N", help="keep the first N convolutions in float")
    ap.add_argument("--fp32-heads", action="store_true", help="keep the detection heads in float")
    ap.add_argument("--name", default="", help="model and card name (default: CARDNAME-int8)")
    args = ap.parse_args(argv)
    print(quantize(args.card, args.out_dir, args.frames, calibration=args.calibration,
                   fp32_first=args.fp32_first, fp32_heads=args.fp32_heads, name=args.name))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
