"""The ingested sessions the tags refer to: OUT/<device>/<session>/frames.jsonl (see uplink/backend/sink.py).

Each committed frame carries the manifest the device sent with it: the regions it redacted (bbox,
class, score, action, applies_to), the policy version and the models. Pixels inside a colour-redacted
region were never sent in clear; everything else in rgb/<seq>.jpg was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uplink.backend.sink import read_frames
from uplink.backend.tags.format import TagError

Key = tuple[str, str, int]


@dataclass
class FrameRec:
    device: str
    session: str
    seq: int
    root: Path
    entry: dict[str, Any]

    @property
    def key(self) -> Key:
        return self.device, self.session, self.seq

    @property
    def manifest(self) -> dict[str, Any]:
        m = self.entry.get("manifest")
        return m if isinstance(m, dict) else {}

    @property
    def regions(self) -> list[dict[str, Any]]:
        regs = self.manifest.get("regions")
        return [r for r in regs if isinstance(r, dict) and _box(r.get("bbox"))] if isinstance(regs, list) else []

    @property
    def obscured(self) -> bool:
        return self.manifest.get("coverage") == "obscured"

    @property
    def version(self) -> str:
        """'<policy version> / <model>@<version>+...' — what produced this frame's redactions. A layered
        policy (manifest `policy_layers`, e.g. built-in + fleet + wearer) names every layer's version."""
        m = self.manifest
        models = m.get("models") if isinstance(m.get("models"), list) else []
        names = "+".join(f"{x.get('name', '?')}@{x.get('version', '?')}" if isinstance(x, dict) else str(x)
                         for x in models)
        layers = m.get("policy_layers")
        policy = str(m.get("policy_version", "?"))
        if isinstance(layers, dict) and len(layers) > 1:
            policy = "+".join(f"{k}:{v}" for k, v in layers.items())
        elif isinstance(layers, dict) and layers:
            policy = str(next(iter(layers.values())))
        if m.get("floor") == "lowered":
            policy += " (floor lowered)"
        return f"{policy} / {names or '?'}"

    def color_boxes(self) -> list[tuple[float, float, float, float]]:
        """Boxes whose colour pixels were redacted before sending."""
        return [tuple(float(v) for v in r["bbox"]) for r in self.regions  # type: ignore[misc]
                if r.get("applies_to", "both") in ("color", "both")]

    def image(self) -> np.ndarray | None:
        import cv2

        return cv2.imread(str(self.root / self.entry.get("rgb", "")), cv2.IMREAD_COLOR)

    def depth(self) -> np.ndarray | None:
        import cv2

        return cv2.imread(str(self.root / self.entry.get("depth", "")), cv2.IMREAD_UNCHANGED)

    def pose(self) -> np.ndarray | None:
        try:
            p = np.asarray(self.entry.get("pose"), dtype=float).reshape(4, 4)
        except (TypeError, ValueError):
            return None
        return p if np.isfinite(p).all() else None


def _box(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 4 and all(isinstance(x, int | float) for x in v)


class Sessions:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise TagError(f"--sessions: {self.root}: not a folder (expected the ingest's OUT folder)")
        self.frames: dict[Key, FrameRec] = {}
        self.folders: dict[tuple[str, str], Path] = {}
        logs = [self.root / "frames.jsonl"] if (self.root / "frames.jsonl").exists() else \
            sorted(self.root.glob("*/*/frames.jsonl"))
        for log in logs:
            folder = log.parent
            device, session = folder.parent.name, folder.name
            self.folders[(device, session)] = folder
            for e in read_frames(folder):
                if isinstance(e.get("seq"), int):
                    self.frames[(device, session, e["seq"])] = FrameRec(device, session, e["seq"], folder, e)
        if not self.folders:
            raise TagError(f"--sessions: {self.root}: no session folders (<device>/<session>/frames.jsonl)")

    def get(self, key: Key) -> FrameRec | None:
        return self.frames.get(key)

    def camera(self, device: str, session: str) -> dict[str, Any]:
        try:
            return json.loads((self.folders[(device, session)] / "camera.json").read_text())
        except (KeyError, OSError, ValueError):
            return {}


def coverage(box: tuple[float, ...], covers: list[tuple[float, ...]]) -> float:
    """The share of `box`'s area inside the union of `covers` (rasterised on the box's own pixel grid)."""
    x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
    x2, y2 = max(x1 + 1, int(np.ceil(box[2]))), max(y1 + 1, int(np.ceil(box[3])))
    mask = np.zeros((y2 - y1, x2 - x1), bool)
    for c in covers:
        cx1, cy1 = max(int(np.floor(c[0])), x1), max(int(np.floor(c[1])), y1)
        cx2, cy2 = min(int(np.ceil(c[2])), x2), min(int(np.ceil(c[3])), y2)
        if cx2 > cx1 and cy2 > cy1:
            mask[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1] = True
    return float(mask.mean())


def overlaps(a: tuple[float, ...], b: tuple[float, ...], share: float = 0.3) -> bool:
    """The intersection is at least `share` of the smaller box."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return small > 0 and iw * ih >= share * small
