"""Model cards: a small TOML file beside every model saying what it is and how to run it.

    name, version, file (path relative to the card, or `package:PKG/RESOURCE`), sha256,
    decoder (`centerface` | `retinaface` | `yolo` | `ppocr_det` | `ppocr_rec` | `ssd` | `selfie`: a person
    segmenter, redact/segment.py), classes (list; index =
    class id), license,
    [input] name, channels (rgb|bgr), mean (a number, or one per tensor channel), scale
            (tensor = (pixel - mean) * scale),
            size ("dynamic" or [w, h]), multiple,
    [decoder_options] decoder-specific (threshold, nms_iou, output names).

Every error names the card file and the field.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capture.config import ConfigError, read_toml

DECODERS = ("centerface", "retinaface", "yolo", "ppocr_det", "ppocr_rec", "ssd", "ssd_raw", "selfie")
CLASS_NAMES = ("face", "person", "plate", "text", "screen")


class CardError(ConfigError):
    """A model card or the model file it names is wrong; the message names the file and field."""


@dataclass(frozen=True)
class InputSpec:
    name: str = ""
    channels: str = "rgb"
    mean: float | tuple[float, float, float] = 0.0  # one per tensor channel (in the tensor's order)
    scale: float = 1.0
    size: tuple[int, int] | None = None  # fixed (w, h); None = dynamic
    multiple: int = 32


@dataclass(frozen=True)
class ModelCard:
    card_path: Path
    name: str
    version: str
    file: Path
    sha256: str
    decoder: str
    classes: tuple[str, ...]
    input: InputSpec
    options: dict[str, Any] = field(default_factory=dict)
    license: str = ""

    @property
    def model_id(self) -> dict[str, str]:
        """What the manifest records about this model."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def default_card_path() -> Path:
    return Path(str(importlib.resources.files("redact") / "models" / "centerface.toml"))


def default_face_card_path() -> Path:
    """The built-in face path's every-frame detector (RetinaFace-MobileNet0.25, int8)."""
    return default_card_path().parent / "retinaface-int8.toml"


def shipped_card_paths() -> list[Path]:
    """Every card shipped in redact/models (the default face card first)."""
    first = default_card_path()
    return [first, *sorted(p for p in first.parent.glob("*.toml") if p != first)]


def shipped_card(stem: str) -> Path:
    """A shipped card by file stem (e.g. "ppocr_det")."""
    return default_card_path().parent / f"{stem}.toml"


def load_card(path: str | Path) -> ModelCard:
    """Parse and validate a card (does not read the model file; see `verify`)."""
    p = Path(path)
    raw = read_toml(p, "model card", CardError)

    def bad(key: str, what: str, got: Any) -> CardError:
        return CardError(f"{p}: {key}: expected {what}, got {got!r}")

    known = {"name", "version", "file", "sha256", "decoder", "classes", "license", "input", "decoder_options"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CardError(f"{p}: {unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
    for key in ("name", "version", "file", "sha256", "decoder"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise bad(key, "a non-empty string", raw.get(key))
    sha = raw["sha256"].lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise bad("sha256", "64 hex digits", raw["sha256"])
    if raw["decoder"] not in DECODERS:
        raise bad("decoder", f"one of {', '.join(DECODERS)}", raw["decoder"])
    classes = raw.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise bad("classes", "a non-empty list of class names", classes)
    for i, c in enumerate(classes):
        if c not in CLASS_NAMES and not (c.startswith("custom:") and len(c) > 7):
            raise bad(f"classes[{i}]", f"one of {', '.join(CLASS_NAMES)} or custom:<name>", c)
    inp = _input_spec(raw.get("input", {}), bad)
    options = raw.get("decoder_options", {})
    if not isinstance(options, dict):
        raise bad("decoder_options", "a table", options)
    return ModelCard(card_path=p, name=raw["name"], version=raw["version"], file=_resolve(p, raw["file"], bad),
                     sha256=sha, decoder=raw["decoder"], classes=tuple(classes), input=inp,
                     options=dict(options), license=str(raw.get("license", "")))


def _input_spec(t: Any, bad: Any) -> InputSpec:
    if not isinstance(t, dict):
        raise bad("input", "a table", t)
    unknown = sorted(set(t) - {"name", "channels", "mean", "scale", "size", "multiple"})
    if unknown:
        raise bad(f"input.{unknown[0]}", "no such field (known: channels, mean, multiple, name, scale, size)", t[unknown[0]])
    name = t.get("name", "")
    if not isinstance(name, str):
        raise bad("input.name", "a string", name)
    channels = t.get("channels", "rgb")
    if channels not in ("rgb", "bgr"):
        raise bad("input.channels", "'rgb' or 'bgr'", channels)
    def is_number(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)

    mean_raw = t.get("mean", 0.0)
    if isinstance(mean_raw, list):
        if len(mean_raw) != 3 or not all(is_number(v) for v in mean_raw):
            raise bad("input.mean", "a number or a list of 3 numbers (one per tensor channel)", mean_raw)
        mean: float | tuple[float, float, float] = (float(mean_raw[0]), float(mean_raw[1]), float(mean_raw[2]))
    elif is_number(mean_raw):
        mean = float(mean_raw)
    else:
        raise bad("input.mean", "a number or a list of 3 numbers (one per tensor channel)", mean_raw)
    if not is_number(t.get("scale", 1.0)):
        raise bad("input.scale", "a number", t.get("scale"))
    if not t.get("scale", 1.0):
        raise bad("input.scale", "a non-zero number", t.get("scale"))
    multiple = t.get("multiple", 32)
    if isinstance(multiple, bool) or not isinstance(multiple, int) or not 1 <= multiple <= 256:
        raise bad("input.multiple", "an integer 1-256", multiple)
    size = t.get("size", "dynamic")
    fixed: tuple[int, int] | None = None
    if size != "dynamic":
        if (not isinstance(size, list) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in size)):
            raise bad("input.size", '"dynamic" or [width, height] (integers 8-4096)', size)
        fixed = (size[0], size[1])
    return InputSpec(name=name, channels=channels, mean=mean,
                     scale=float(t.get("scale", 1.0)), size=fixed, multiple=multiple)


def _resolve(card: Path, ref: str, bad: Any) -> Path:
    if ref.startswith("package:"):
        pkg, _, resource = ref[len("package:"):].partition("/")
        if not pkg or not resource:
            raise bad("file", "package:PACKAGE/RESOURCE", ref)
        try:
            return Path(str(importlib.resources.files(pkg) / resource))
        except ModuleNotFoundError:
            raise bad("file", f"an installed package (is {pkg!r} installed?)", ref) from None
        except TypeError:  # a module, not a package (e.g. package:os/x)
            raise bad("file", f"package:PACKAGE/RESOURCE with a package ({pkg!r} is a module)", ref) from None
    f = Path(ref)
    return f if f.is_absolute() else card.parent / f


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_verified(card: ModelCard) -> bytes:
    """The model file's bytes, after checking they hash to the card's sha256."""
    try:
        data = card.file.read_bytes()
    except FileNotFoundError:
        raise CardError(f"{card.card_path}: file: model file {card.file} not found") from None
    except OSError as e:
        raise CardError(f"{card.card_path}: file: cannot read model file {card.file} ({e.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.sha256:
        raise CardError(f"{card.card_path}: sha256: model file {card.file} hashes to {digest}, "
                        f"card says {card.sha256} (corrupt or replaced file)")
    return data
