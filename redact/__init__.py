"""On-device privacy redaction: ONNX detectors, the wearer's policy, colour and depth, fail closed.

`build_stage(cfg)` is the only entry point the pipeline needs. onnxruntime is imported lazily.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from redact.config import RedactConfig

if TYPE_CHECKING:
    from redact.stage import RedactStage

log = logging.getLogger("crowdcap.redact")


def build_stage(cfg: RedactConfig) -> RedactStage:
    """The redaction stage for `cfg`. A bad policy raises ConfigError (PolicyError); a model that
    cannot be loaded does not raise: the stage then withholds every frame ("no_model") and says why
    in `status()["load_error"]`.
    """
    from redact.cards import CardError, default_face_card_path, load_card
    from redact.detector import Detector
    from redact.policy import load_policy
    from redact.runtime import ModelLoadError
    from redact.stage import RedactStage

    policy = load_policy(cfg.policy)
    detectors = []
    error = ""
    for path in cfg.models or [str(default_face_card_path())]:
        try:
            detectors.append(Detector(load_card(path), cfg.threads, cfg.cache_dir))
        except (CardError, ModelLoadError) as e:
            error = str(e)
            log.error("redaction model not loaded, every frame will be withheld: %s", e)
            detectors = []
            break
    verifier = None
    verify = cfg.verify_model if cfg.verify_model != "auto" else ("" if cfg.models else "centerface")
    if detectors and verify and cfg.verify_candidates:
        try:
            verifier = Detector(load_card(verify_card_path(verify)), cfg.threads, cfg.cache_dir)
        except (CardError, ModelLoadError) as e:
            error = f"verify_model: {e}"
            log.error("redaction verify model not loaded, every frame will be withheld: %s", e)
            detectors = []
    return RedactStage(cfg, policy, detectors, error, verifier)


def verify_card_path(ref: str) -> str:
    """A shipped card's name (no slash, no .toml) → its path; anything else is a card file."""
    from redact.cards import default_card_path

    if "/" in ref or ref.endswith(".toml"):
        return ref
    return str(default_card_path().parent / f"{ref}.toml")


__all__ = ["RedactConfig", "build_stage"]
