"""Sent frames through the real redaction stage (the device's detectors and stage code) with a policy.

The backend only has what the device sent: the colour already redacted under the policy of the day.
So a policy P's redactions of a frame are
- the manifest's regions P would still redact (P has a rule for the class, the recorded score reaches
  P's `min_score`, the action is not colour-less) — their pixels were never sent, so they cannot be
  re-detected, only re-judged by their recorded score; plus
- what the real stage finds with P on the sent pixels (what P would add).
Frames are replayed one by one with every detector on every frame (hold_frames = 0, text/person every
frame, nothing held over from the previous replayed frame: no tracking credit), with no time budget.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from uplink.backend.tags.format import TagError
from uplink.backend.tags.sessions import FrameRec, Key, Sessions

log = logging.getLogger("crowdcap.tags")


def replay_config(base: Any = None) -> Any:
    from redact.config import RedactConfig

    cfg = base if base is not None else RedactConfig()
    every = {k: 1 for k in ("text_every", "person_every") if k in RedactConfig.__dataclass_fields__}
    return dataclasses.replace(cfg, hold_frames=0, budget_ms=10000.0, cache_dir=cfg.cache_dir, threads=1, **every)


def _as_recorded(sessions: Sessions) -> Any:
    """Without the devices' config: the face model the sessions' manifests name, when it is one shipped
    card (scores, and so thresholds, belong to one model); else the built-in face path."""
    from redact.cards import default_card_path, load_card
    from redact.config import RedactConfig

    named = {m.get("sha256") for rec in sessions.frames.values()
             for m in (rec.manifest.get("models") or []) if isinstance(m, dict)}
    faces = [p for p in sorted(default_card_path().parent.glob("*.toml"))
             if (card := load_card(p)).sha256 in named and "face" in card.classes]
    return RedactConfig(models=[str(faces[0])]) if len(faces) == 1 else RedactConfig()


class Replayer:
    """One set of loaded detectors; `regions(policy, frames)` per policy (a stage per call, detectors shared)."""

    def __init__(self, sessions: Sessions, redact_cfg: Any = None) -> None:
        import redact

        self.sessions = sessions
        self.cfg = replay_config(redact_cfg if redact_cfg is not None else _as_recorded(sessions))
        self._base = redact.build_stage(self.cfg)
        if self._base.load_error:
            raise TagError(f"redaction model does not load: {self._base.load_error}")
        self.classes = sorted({c for d in self._base.detectors for c in d.card.classes})
        self.frames_replayed = 0
        self._provides: dict[str, bool] = {}

    def provides(self, cls: str) -> bool:
        """A loaded detector (or the forms' schedule, issue 11) finds `cls`: a stage with a rule for it runs."""
        from redact.policy import Policy, Rule
        from redact.stage import RedactStage

        if cls in self.classes:
            return True
        if cls not in self._provides:
            trial = Policy("probe", "withhold", (Rule(cls, "blur", margin=0.0, min_score=0.3),))
            try:
                self._provides[cls] = not RedactStage(self.cfg, trial, self._base.detectors)._policy_error
            except Exception:
                self._provides[cls] = False
        return self._provides[cls]

    def frame(self, rec: FrameRec) -> Any:
        from capture.frame import Intrinsics, RGBDFrame

        color = rec.image()
        depth = rec.depth()
        if color is None:
            return None
        h, w = color.shape[:2]
        if depth is None or depth.shape != (h, w) or depth.dtype != np.uint16:
            depth = np.zeros((h, w), np.uint16)
        cam = self.sessions.camera(rec.device, rec.session)
        try:
            intr = Intrinsics(w, h, float(cam["fx"]), float(cam["fy"]), float(cam["cx"]), float(cam["cy"]))
        except (KeyError, TypeError, ValueError):
            intr = Intrinsics(w, h, 525.0 * w / 640, 525.0 * w / 640, (w - 1) / 2, (h - 1) / 2)
        return RGBDFrame(rec.device, rec.session, rec.seq, 0, float(rec.entry.get("t", 0.0)), color, depth,
                         float(cam.get("depth_scale") or 1000.0), intr)

    def detect(self, policy: Any, keys: Iterable[Key]) -> dict[Key, list[dict[str, Any]]]:
        """The stage's regions with `policy` on the sent pixels of each frame (colour-redacting ones only)."""
        from capture.frame import FrameWithheld
        from redact.stage import RedactStage

        stage = RedactStage(self.cfg, policy, self._base.detectors)
        if stage._policy_error:
            raise TagError(stage._policy_error)
        out: dict[Key, list[dict[str, Any]]] = {}
        for key in sorted(keys):
            rec = self.sessions.get(key)
            frame = self.frame(rec) if rec is not None else None
            if frame is None:
                continue
            stage.tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))  # no carry-over
            forms = getattr(stage, "forms", None)  # rule-defined forms' schedule (issue 11): fresh holds too
            if forms is not None and hasattr(forms, "models"):
                stage.forms = type(forms)(self.cfg, policy, stage._classes, forms.models)
            try:
                res = stage.apply(frame)
                regs = (res.redaction or {}).get("regions", [])
            except FrameWithheld as e:
                if e.reason != "policy_drop":
                    raise TagError(f"replay of {key}: frame withheld ({e})") from None
                regs = [{"bbox": [0, 0, frame.size[0], frame.size[1]], "class": "(drop_frame)", "score": 1.0,
                         "action": "drop_frame", "applies_to": "both"}]
            self.frames_replayed += 1
            out[key] = [r for r in regs if r.get("applies_to") in ("color", "both")]
        return out


def kept(policy: Any, rec: FrameRec) -> list[dict[str, Any]]:
    """The manifest regions that `policy` would still redact (re-judged by their recorded score)."""
    out = []
    for r in rec.regions:
        rule = policy.rule_for(str(r.get("class")))
        score = r.get("score")
        if rule is None or not rule.color or not isinstance(score, int | float):
            continue
        if score >= rule.min_score:
            out.append(r)
    return out


def policy_redactions(replayer: Replayer, policy: Any, keys: Iterable[Key]) -> Any:
    """A `score.evaluate` redactions callback: kept manifest regions ∪ what the stage adds with `policy`."""
    found = replayer.detect(policy, keys)

    def redactions(rec: FrameRec) -> tuple[list[dict[str, Any]], bool]:
        return kept(policy, rec) + found.get(rec.key, []), rec.obscured

    return redactions
