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


def build_stage(cfg: RedactConfig, private: object | None = None, *, _prove: bool = True) -> RedactStage:
    """The redaction stage for `cfg`. A bad policy raises ConfigError (PolicyError); a model that
    cannot be loaded does not raise: the stage then withholds every frame ("no_model") and says why
    in `status()["load_error"]`. Every detector must first find the known faces of the reference
    frames (`redact.proof`); `_prove=False` is for tests of run-time faults only (no config reaches it).
    `private`: the wearer's own objects/volumes (redact.private.layer).
    """
    from redact.cards import CardError, default_card_path, load_card
    from redact.detector import Detector
    from redact.layers import PolicyLayers
    from redact.proof import prove
    from redact.runtime import ModelLoadError
    from redact.stage import RedactStage

    policy = PolicyLayers.from_config(cfg).load()  # floor ∪ fleet ∪ wearer; a layer below the floor raises
    detectors = []
    proofs = []
    error = ""
    for path in cfg.models or [str(default_card_path())]:
        try:
            det = Detector(load_card(path), cfg.threads, cfg.cache_dir)
        except (CardError, ModelLoadError) as e:
            error = str(e)
        else:
            # A model that loads but does not find the known faces of the reference frames is not loaded.
            proofs.append(prove(det) if _prove else {"ok": True, "detail": "not proven (test)", "unproven": [], "ms": 0})
            error = "" if proofs[-1]["ok"] else proofs[-1]["detail"]
            if not error:
                detectors.append(det)
        if error:
            log.error("redaction model not loaded, every frame will be withheld: %s", error)
            detectors = []
            break
    stage = RedactStage(cfg, policy, detectors, error)
    stage.canary.proofs = proofs
    stage.private = private
    return stage


__all__ = ["RedactConfig", "build_stage"]
