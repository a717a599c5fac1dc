"""What the wearer's private things share: name checks, the name hash, the state folder layout,
atomic JSON files, and region masks applied to colour and depth.

Names never leave the device: status, telemetry and manifests carry `name_hash(name)` only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from capture.configcore import InputError
from redact.actions import ACTIONS

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ACTIONS_PRIVATE = ("fill", "blur", "pixelate")
APPLIES_TO = ("color", "depth", "both")


class PrivateError(InputError):
    """Bad input for a private object, volume or zone; the message names the thing and the field."""


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise PrivateError(f"{what} name: expected 1-64 of A-Z a-z 0-9 _ . - (starting with a letter or digit), "
                           f"got {name!r}")
    return name


def name_hash(name: str) -> str:
    """16 hex digits naming a private thing in status, telemetry and manifests (never the name)."""
    return hashlib.sha256(b"crowdcap-private\0" + name.encode()).hexdigest()[:16]


def private_dir(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / "private"


def atomic_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise PrivateError(f"{path}: cannot read the {what} ({e}); fix or remove the file") from None


class Canvas:
    """Colour and depth being redacted: copied on first write (the source's buffers are never touched)."""

    def __init__(self, color: np.ndarray, depth: np.ndarray, originals: tuple[np.ndarray, np.ndarray]) -> None:
        self.color, self.depth = color, depth
        self._orig = originals

    def _writable(self) -> None:
        if self.color is self._orig[0]:
            self.color = self.color.copy()
        if self.depth is self._orig[1]:
            self.depth = self.depth.copy()

    def redact_mask(self, mask: np.ndarray, x0: int, y0: int, action: str, applies_to: str) -> None:
        """Redact the pixels of `mask` (a bool array placed at x0, y0) in colour and/or depth."""
        if not mask.any():
            return
        self._writable()
        h, w = mask.shape
        if applies_to in ("color", "both"):
            roi = self.color[y0:y0 + h, x0:x0 + w]
            if action == "fill":
                roi[mask] = 0
            else:
                tmp = roi.copy()
                ACTIONS[action](tmp)
                np.copyto(roi, tmp, where=mask[..., None])
        if applies_to in ("depth", "both"):
            self.depth[y0:y0 + h, x0:x0 + w][mask] = 0


def polygon_mask(poly: np.ndarray, width: int, height: int) -> tuple[np.ndarray, int, int] | None:
    """(bool mask of the polygon's bounding box clipped to the image, x0, y0), None if outside."""
    x0, y0 = np.floor(poly.min(0)).astype(int)
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = np.round((poly - [x0, y0]) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, 4)
    return mask.view(bool), x0, y0
