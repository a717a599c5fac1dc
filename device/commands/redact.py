"""`crowdcap redact INPUT... --out DIR [--policy FILE] [--json] [--config FILE] [--state-dir DIR]`: redact
files offline. With --state-dir (or --config), the wearer's private objects and volumes apply too.

INPUT is a colour image (jpg/png), a TUM-layout folder (rgb.txt + depth.txt), or an RGB-D pair
`COLOR+DEPTH` (16-bit depth PNG). Outputs go to DIR (never in place): images keep their name,
pairs become NAME.png + NAME.depth.png, folders become DIR/NAME in TUM layout with one manifest per
frame in redaction.jsonl. Stills are detected at full resolution. With --json, one JSON object per
input on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from device.cli import CliError

IMAGE_EXT = {".jpg", ".jpeg", ".png"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("redact", help="redact images, RGB-D pairs and TUM folders into DIR", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image, COLOR+DEPTH pair, or TUM-layout folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--policy", default="", metavar="FILE", help="wearer policy TOML (default: built-in)")
    p.add_argument("--model", action="append", default=[], metavar="CARD", help="model card TOML (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object per input on stdout")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    p.add_argument("--config", default=None, help="config TOML: its [privacy] section and device.state_dir")
    p.add_argument("--state-dir", default=None,
                   help="device state folder: its private objects and volumes apply too (crowdcap privacy)")
    p.set_defaults(func=run)


def _classify(arg: str) -> tuple[str, Path, Path | None]:
    p = Path(arg)
    if p.is_dir():
        return "tum", p, None
    if p.is_file():
        if p.suffix.lower() not in IMAGE_EXT:
            raise CliError(f"{arg}: not a jpg/png image, COLOR+DEPTH pair or TUM-layout folder")
        return "image", p, None
    if "+" in arg:
        color, _, depth = arg.partition("+")
        for part in (color, depth):
            if not Path(part).is_file():
                raise CliError(f"{arg}: pair part {part} not found")
        return "pair", Path(color), Path(depth)
    raise CliError(f"{arg}: not found")


def run(args: argparse.Namespace) -> int:
    from redact import build_stage
    from redact.config import RedactConfig
    from redact.proof import slow_factor

    jobs = [(arg, *_classify(arg)) for arg in args.inputs]
    out = Path(args.out)
    for arg, _kind, path, depth in jobs:
        for src in (path, depth):
            if src is not None and out.resolve() in (src.resolve().parent, src.resolve()):
                raise CliError(f"{arg}: --out {out} is where the input lives; refusing to redact in place")
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if not 1 <= args.threads <= 16:
        raise CliError(f"--threads: expected 1-16, got {args.threads}")
    # Offline: the whole frame at full resolution every time (no tiles), generous time budget.
    # Every detector (text, persons) on every frame too, at full resolution.
    cfg = RedactConfig(policy=args.policy, models=list(args.model), threads=args.threads,
                       budget_ms=10000.0 * slow_factor(),
                       detect_width=4096, detect_height=4096, tile_width=0, tile_height=0,
                       text_width=4096, text_height=4096, text_every=1, person_every=1,
                       verify_model_every=1, detect_width_verify=4096, detect_height_verify=4096)
    stage = build_stage(cfg, private=_private_layer(args))
    if stage.load_error:
        raise CliError(stage.load_error)
    used: set[str] = set()
    failures = 0
    for n, (arg, kind, path, depth) in enumerate(jobs, 1):
        if len(jobs) > 1:
            print(f"[{n}/{len(jobs)}] {arg}", file=sys.stderr)
        name = _unique(path.stem if kind != "tum" else path.name, used)
        t0 = time.perf_counter()
        try:
            withheld = 0
            if kind == "tum":
                output, regions, withheld = _redact_folder(stage, path, out / name)
            else:
                output, regions = _redact_still(stage, path, depth, out, name)
        except CliError as e:
            failures += 1
            print(f"crowdcap: error: {e}", file=sys.stderr)
            if args.json:
                print(json.dumps({"input": arg, "error": str(e)}), flush=True)
            continue
        ms = round((time.perf_counter() - t0) * 1000.0, 1)
        if withheld:  # not written (fail closed); each is listed with its reason in redaction.jsonl
            print(f"crowdcap: {arg}: {withheld} frame(s) withheld, not written (see {output}/redaction.jsonl)",
                  file=sys.stderr)
        if args.json:
            print(json.dumps({"input": arg, "output": str(output), "regions": regions, "ms": ms,
                              "withheld": withheld}), flush=True)
        elif len(jobs) == 1:
            print(f"{arg} -> {output}: {len(regions)} region(s) redacted in {ms} ms")
    stage.close()
    return 1 if failures else 0


def _private_layer(args: argparse.Namespace) -> Any:
    """The wearer's private objects/volumes from --state-dir (or the config's device.state_dir)."""
    if args.config is None and args.state_dir is None:
        return None
    from device import config as config_mod
    from redact.private.common import PrivateError
    from redact.private.layer import PrivateLayer

    cfg = config_mod.override(config_mod.load(args.config), **{"device.state_dir": args.state_dir})
    if not cfg.privacy.enabled:
        return None
    try:
        return PrivateLayer.load(cfg.device.state_dir, cfg.privacy)
    except PrivateError as e:
        raise CliError(str(e)) from None


def _unique(stem: str, used: set[str]) -> str:
    name, k = stem, 2
    while name in used:
        name, k = f"{stem}-{k}", k + 1
    used.add(name)
    return name


def _public(r: dict[str, Any]) -> dict[str, Any]:
    return {"bbox": r["bbox"], "class": r["class"], "score": r["score"], "action": r["action"]}


def _redact_still(stage: Any, path: Path, depth_path: Path | None, out: Path, name: str) -> tuple[Path, list[Any]]:
    import cv2
    import numpy as np

    from capture.frame import FrameWithheld, Intrinsics, RGBDFrame, now_stamps

    color = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if color is None:
        raise CliError(f"{path}: cannot read the image (not a valid jpg/png?)")
    h, w = color.shape[:2]
    if depth_path is not None:
        depth = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
        if depth is None or depth.dtype != np.uint16 or depth.ndim != 2:
            raise CliError(f"{depth_path}: expected a 16-bit single-channel depth PNG")
        if depth.shape != (h, w):
            raise CliError(f"{depth_path}: depth is {depth.shape[1]}x{depth.shape[0]}, colour {path} is {w}x{h}")
    else:
        depth = np.zeros((h, w), np.uint16)
    s = w / 640.0
    intr = Intrinsics(w, h, 525.0 * s, 525.0 * s, (w - 1) / 2, (h - 1) / 2)
    t_mono, t_utc = now_stamps()
    frame = RGBDFrame("cli", "redact", 0, t_mono, t_utc, color, depth, 1000.0, intr)
    stage.tracker.reset()  # unrelated stills: nothing carries over
    stage.forms.reset()
    if stage.private is not None:
        stage.private.reset()
    try:
        result = stage.apply(frame)
    except FrameWithheld as e:
        raise CliError(f"{path}: withheld ({e}); nothing written") from None
    ext = path.suffix.lower() if depth_path is None else ".png"
    output = out / f"{name}{ext}"
    if not cv2.imwrite(str(output), result.color):
        raise CliError(f"{output}: cannot write")
    if depth_path is not None:
        cv2.imwrite(str(out / f"{name}.depth.png"), result.depth)
    return output, [_public(r) for r in result.redaction["regions"]]


def _redact_folder(stage: Any, path: Path, dest: Path) -> tuple[Path, list[Any], int]:
    from capture.frame import FrameWithheld, SourceError
    from capture.replay import ReplaySource
    from capture.tum import LayoutError, TumWriter

    try:
        src = ReplaySource(path, pace="fast")
    except LayoutError as e:
        raise CliError(str(e)) from None
    if dest.exists() and any(dest.iterdir()):
        raise CliError(f"{dest}: exists and is not empty; choose another --out")
    stage.tracker.reset()
    stage.forms.reset()
    if stage.private is not None:
        stage.private.reset()
    writer = TumWriter(dest)
    regions: list[Any] = []
    withheld = 0
    src.open()
    try:
        with (dest / "redaction.jsonl").open("w") as manifests:
            while True:
                try:
                    frame = src.read()
                except SourceError as e:
                    raise CliError(str(e)) from None
                if frame is None:
                    break
                try:
                    result = stage.apply(frame)
                except FrameWithheld as e:
                    manifests.write(json.dumps({"t": frame.t_utc, "withheld": e.reason}) + "\n")
                    withheld += 1
                    continue
                writer.append(result)
                manifests.write(json.dumps({"t": frame.t_utc, **result.redaction}) + "\n")
                regions.extend({**_public(r), "frame": f"{frame.t_utc:.6f}"} for r in result.redaction["regions"])
    finally:
        writer.close()
        src.close()
    return dest, regions, withheld
