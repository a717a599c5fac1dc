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


def build_stage(cfg: RedactConfig, private: object | None = None) -> RedactStage:
    """The redaction stage for `cfg`. A bad policy raises ConfigError (PolicyError); a model that
    cannot be loaded does not raise: the stage then withholds every frame ("no_model") and says why
    in `status()["load_error"]`. `private`: the wearer's own objects/volumes (redact.private.layer).
    """
    from redact.cards import CardError, default_card_path, load_card
    from redact.detector import Detector
    from redact.policy import load_policy
    from redact.runtime import ModelLoadError
    from redact.stage import RedactStage

    policy = load_policy(cfg.policy)
    detectors = []
    error = ""
    for path in cfg.models or [str(default_card_path())]:
        try:
            detectors.append(Detector(load_card(path), cfg.threads, cfg.cache_dir))
        except (CardError, ModelLoadError) as e:
            error = str(e)
            log.error("redaction model not loaded, every frame will be withheld: %s", e)
            detectors = []
            break
    stage = RedactStage(cfg, policy, detectors, error)
    stage.private = private
    return stage


__all__ = ["RedactConfig", "build_stage"]
