"""The forms schedule's models (text detector, text recogniser, person detector), loaded on demand.

Each is loaded once and shared by successive schedules (a policy reload keeps them); at load it runs
once (onnxruntime's first run is several times slower), proves itself on the reference frames
(redact/proof.py `prove`) and must find its running canary patch (`pass_canary`): a model that sees
nothing is not loaded (the schedule withholds its classes' frames, `no_model`, status says why).
The text detector is `redact.text_model`, the recogniser `redact.text_rec_model`, the person
detector `redact.person_model` (a shipped card's name or a card file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from redact.cards import CardError, load_card, shipped_card
from redact.config import RedactConfig
from redact.runtime import ModelLoadError


class Models:
    """Sessions loaded on demand and shared by successive schedules (a policy reload keeps them)."""

    def __init__(self, cfg: RedactConfig) -> None:
        self.cfg = cfg
        self._loaded: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        if name not in self._loaded:
            import onnxruntime as ort

            from redact.detector import Detector
            from redact.recognizer import TextRecognizer

            card = load_card(self._card_path(name))
            cls = TextRecognizer if name == "rec" else Detector
            model = cls(card, self.cfg.threads, self.cfg.cache_dir)
            self._warm(name, model)
            if cls is Detector:  # it must find the known objects of the reference frames (redact/proof.py)
                from redact.proof import _misses, pass_canary, prove

                proof = prove(model)
                if not proof["ok"]:
                    raise ModelLoadError(proof["detail"])
                patch = pass_canary(model.card.classes[0])
                if patch is not None and _misses(model, patch, ort.RunOptions()):
                    raise ModelLoadError(f"{model.card.card_path}: self-test: {model.card.name} does not find "
                                         f"its {patch.cls} canary patch")
            self._loaded[name] = model
        return self._loaded[name]

    def _card_path(self, name: str) -> str | Path:
        key, m, e = {"text": ("text_model", self.cfg.text_model, "ppocr_det_fused, ppocr_det"),
                     "rec": ("text_rec_model", self.cfg.text_rec_model, "ppocr_rec_fused, ppocr_rec"),
                     "person": ("person_model", self.cfg.person_model, "ssdlite_person_cut, ssdlite_person")}[name]
        if m.endswith(".toml") or "/" in m:
            return m
        path = shipped_card(m)
        if not path.is_file():
            raise CardError(f"redact.{key}: no shipped card {m!r} (e.g. {e}; or a card file ending in .toml)")
        return path

    @staticmethod
    def _warm(name: str, model: Any) -> None:
        """One run at load: onnxruntime's first run is several times slower (it would miss a frame's budget)."""
        import onnxruntime as ort

        img = np.full((96, 128, 3), 255, np.uint8)
        cv2.putText(img, "AB 123", (8, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
        if name == "rec":
            model.read(img, np.array([[0, 30, 128, 70]]), ort.RunOptions())
        else:
            model.run(img, model.plan(128, 96, (128, 96), (0, 0))[0], ort.RunOptions())

    def ids(self) -> list[dict[str, str]]:
        return [m.card.model_id for m in self._loaded.values()]
