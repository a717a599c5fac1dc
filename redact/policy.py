"""The wearer's redaction policy (TOML): which classes are private and what happens to them.

    version = "home-2"            # travels with every frame's manifest
    on_fault = "withhold"         # or "obscure": a frame the detector cannot vouch for is sent fully blacked out
    [[rules]]
    class = "face"                # face | person | plate | text | screen | custom:<name>
    action = "blur"               # blur | pixelate | fill | mask | drop_frame (see redact/actions.py)
    margin = 0.35                 # fraction of the box's width/height added on every side
    min_score = 0.2               # 0.01-1: detections below this score are ignored for this rule
    applies_to = "both"           # color | depth | both (depth: set to 0 = no data)
    shape = "box"                 # person only: "mask" redacts just the person's pixels in each box
                                  # (opt-in refinement; falls back to the box: redact/segment.py)
    [[forms]]                     # rule-defined classes (custom:<name>): see redact/forms.py
    name = "bib"
    from = "text"
    match = '^[0-9]{1,6}$'
    inside = "person"

Errors name the file, the rule index and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture.config import ConfigError, read_toml
from redact.cards import CLASS_NAMES
from redact.forms import Form, FormError, parse_forms

ACTIONS = ("blur", "pixelate", "fill", "mask", "drop_frame")
APPLIES_TO = ("color", "depth", "both")
ON_FAULT = ("withhold", "obscure")
SHAPES = ("box", "mask")


class PolicyError(ConfigError):
    """The policy is invalid; the message names the file, rule index and field."""


@dataclass(frozen=True)
class Rule:
    cls: str
    action: str = "blur"
    margin: float = 0.35
    min_score: float = 0.2
    applies_to: str = "both"
    shape: str = "box"  # "mask": person pixels only (redact/segment.py)

    @property
    def color(self) -> bool:
        return self.applies_to in ("color", "both")

    @property
    def depth(self) -> bool:
        return self.applies_to in ("depth", "both")


@dataclass(frozen=True)
class Policy:
    version: str
    on_fault: str
    rules: tuple[Rule, ...]
    origin: str = "built-in"
    forms: tuple[Form, ...] = ()
    # Set on an effective (layered) policy by `redact.layers`: where each rule came from, the layers'
    # versions, and whether the privacy floor is enforced or was lowered by the device's config file.
    sources: tuple[str, ...] = ()
    layers: tuple[tuple[str, str], ...] = ()
    floor: str = "enforced"

    def rule_for(self, cls: str) -> Rule | None:
        for rule in self.rules:
            if rule.cls == cls:
                return rule
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version, "on_fault": self.on_fault, "origin": self.origin,
            "rules": [{"class": r.cls, "action": r.action, "margin": r.margin, "min_score": r.min_score,
                       "applies_to": r.applies_to} | ({"shape": r.shape} if r.shape != "box" else {})
                      for r in self.rules]}
        if self.forms:
            out["forms"] = [f.to_dict() for f in self.forms]
        if self.sources:
            for rule, source in zip(out["rules"], self.sources, strict=True):
                rule["source"] = source
        if self.layers:
            out["layers"] = dict(self.layers)
            out["floor"] = self.floor
        return out


# Faces: strong blur, a generous margin (deface's default mask scale is +30 %), depth removed too.
# Plates (the built-in form over text, redact/forms.py), as EgoBlur and Mapillary do.
DEFAULT_POLICY = Policy(version="default-2", on_fault="withhold",
                        rules=(Rule("face", "blur", margin=0.35, min_score=0.2, applies_to="both"),
                               Rule("plate", "blur", margin=0.15, min_score=0.3, applies_to="both")))


def load_policy(path: str | Path | None) -> Policy:
    """The policy in `path`, or the built-in default for None/empty."""
    if not path:
        return DEFAULT_POLICY
    p = Path(path)
    raw = read_toml(p, "policy file", PolicyError)
    return parse_policy(raw, str(p))


def parse_policy(raw: dict[str, Any], origin: str) -> Policy:
    def bad(key: str, what: str, got: Any) -> PolicyError:
        return PolicyError(f"{origin}: {key}: expected {what}, got {got!r}")

    unknown = sorted(set(raw) - {"version", "on_fault", "rules", "forms"})
    if unknown:
        raise PolicyError(f"{origin}: {unknown[0]}: unknown field (known: forms, on_fault, rules, version)")
    version = raw.get("version")
    if not isinstance(version, str) or not version:
        raise bad("version", "a non-empty string", version)
    on_fault = raw.get("on_fault", "withhold")
    if on_fault not in ON_FAULT:
        raise bad("on_fault", f"one of {', '.join(ON_FAULT)}", on_fault)
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        raise bad("rules", "an array of tables ([[rules]])", rules_raw)
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, r in enumerate(rules_raw):
        rules.append(_rule(r, f"rules[{i}]", bad))
        if rules[-1].cls in seen:
            raise bad(f"rules[{i}].class", "each class in one rule only", rules[-1].cls)
        seen.add(rules[-1].cls)
    try:
        forms = parse_forms(raw.get("forms", []), origin)
    except FormError as e:
        raise PolicyError(str(e)) from None
    defined = {f.name for f in forms}
    for i, rule in enumerate(rules):
        # Without [[forms]], a custom class may come from a model card; with them, a typo is caught here.
        if forms and rule.cls.startswith("custom:") and rule.cls[7:] not in defined:
            raise bad(f"rules[{i}].class", f"a form defined in [[forms]] (defined: {', '.join(sorted(defined))})",
                      rule.cls)
    return Policy(version=version, on_fault=on_fault, rules=tuple(rules), origin=origin, forms=forms)


def _rule(r: Any, key: str, bad: Any) -> Rule:
    if not isinstance(r, dict):
        raise bad(key, "a table", r)
    known = {"class", "action", "margin", "min_score", "applies_to", "shape"}
    unknown = sorted(set(r) - known)
    if unknown:
        raise bad(f"{key}.{unknown[0]}", f"no such field (known: {', '.join(sorted(known))})", r[unknown[0]])
    cls = r.get("class")
    if not isinstance(cls, str) or not (cls in CLASS_NAMES or (cls.startswith("custom:") and len(cls) > 7)):
        raise bad(f"{key}.class", f"one of {', '.join(CLASS_NAMES)} or custom:<name>", cls)
    action = r.get("action", "blur")
    if action not in ACTIONS:
        raise bad(f"{key}.action", f"one of {', '.join(ACTIONS)}", action)
    applies_to = r.get("applies_to", "both")
    if applies_to not in APPLIES_TO:
        raise bad(f"{key}.applies_to", f"one of {', '.join(APPLIES_TO)}", applies_to)
    margin = r.get("margin", 0.35)
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin) \
            or not 0 <= margin <= 2:
        raise bad(f"{key}.margin", "a number 0-2 (fraction of the box added on each side)", margin)
    min_score = r.get("min_score", 0.2)
    # Below ~0.01 nearly every heatmap cell is a candidate: every frame would be withheld.
    if isinstance(min_score, bool) or not isinstance(min_score, int | float) or not 0.01 <= min_score <= 1:
        raise bad(f"{key}.min_score", "a number 0.01-1", min_score)
    shape = r.get("shape", "box")
    if shape not in SHAPES:
        raise bad(f"{key}.shape", f"one of {', '.join(SHAPES)}", shape)
    if shape == "mask" and cls != "person":
        raise bad(f"{key}.shape", '"box" (a mask is made only for class = "person")', shape)
    if shape == "mask" and action == "drop_frame":
        raise bad(f"{key}.shape", '"box" with action = "drop_frame" (no pixels are painted)', shape)
    return Rule(cls=cls, action=action, margin=float(margin), min_score=float(min_score), applies_to=applies_to,
                shape=shape)
