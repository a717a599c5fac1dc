"""The privacy floor: the built-in face rule that no policy, console, control-socket or downlink
command can remove or weaken — they can only add to it.

The floor is the built-in default's face rule taken as bounds:

    face: action blur (or stronger: fill, drop_frame), applies_to both (colour AND depth),
          min_score at most 0.2, margin at least 0.35

* Every policy layer (fleet, wearer) is validated against it: a rule that weakens it is an error
  naming the file, the rule (`rules[i].field`) and the floor (`check`). A policy that leaves the face
  out (`rules = []`) is fine: the floor's rule is in the effective policy anyway (`redact.layers`).
* Lowering it takes the device's own config file: `[redact] floor = "lowered"` (an installer's
  decision; `config set` refuses the key from every origin). It is logged loudly at every start, and
  shown in status and in every frame's manifest (`"floor": "lowered"`). With the floor lowered the
  built-in face rule is not imposed: the policy layers alone decide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redact.policy import Policy, PolicyError, Rule

log = logging.getLogger("crowdcap.redact")

# How much an action hides (higher = more). pixelate is below the floor: mosaics of faces can be
# matched back to the face; blur reduces to ~10 px cells and smooths.
ACTION_STRENGTH = {"pixelate": 1, "blur": 2, "fill": 3, "drop_frame": 4}

ENFORCED = "enforced"
LOWERED = "lowered"
FLOOR_STATES = (ENFORCED, LOWERED)
LOWER_HOW = 'only the device\'s own config file can lower the floor ([redact] floor = "lowered")'


@dataclass(frozen=True)
class FloorRule:
    cls: str
    action: str  # the weakest action allowed
    applies_to: str  # "both": colour and depth
    max_min_score: float
    min_margin: float

    def describe(self) -> str:
        return (f"{self.cls}: {self.action} or stronger, applies_to both, min_score ≤ {self.max_min_score}, "
                f"margin ≥ {self.min_margin}")

    def as_rule(self) -> Rule:
        return Rule(self.cls, self.action, margin=self.min_margin, min_score=self.max_min_score,
                    applies_to=self.applies_to)


FLOOR: tuple[FloorRule, ...] = (FloorRule("face", "blur", "both", max_min_score=0.2, min_margin=0.35),)


def floor_rule(cls: str) -> FloorRule | None:
    for f in FLOOR:
        if f.cls == cls:
            return f
    return None


def check(policy: Policy) -> None:
    """PolicyError naming the rule and field when `policy` weakens the floor."""
    for i, rule in enumerate(policy.rules):
        f = floor_rule(rule.cls)
        if f is None:
            continue
        problems = []
        if ACTION_STRENGTH[rule.action] < ACTION_STRENGTH[f.action]:
            problems.append(("action", rule.action, f"{f.action}, fill or drop_frame"))
        if rule.applies_to != "both":
            problems.append(("applies_to", rule.applies_to, "both (colour and depth)"))
        if rule.min_score > f.max_min_score:
            problems.append(("min_score", rule.min_score, f"at most {f.max_min_score}"))
        if rule.margin < f.min_margin:
            problems.append(("margin", rule.margin, f"at least {f.min_margin}"))
        if problems:
            field, got, want = problems[0]
            raise PolicyError(f"{policy.origin}: rules[{i}].{field}: {got!r} weakens the privacy floor "
                              f"(floor rule {f.describe()}); expected {want}. {LOWER_HOW}")


def stricter(a: Rule, b: Rule) -> Rule:
    """One rule that redacts at least as much as both (same class)."""
    action = a.action if ACTION_STRENGTH[a.action] >= ACTION_STRENGTH[b.action] else b.action
    sides = {a.applies_to, b.applies_to}
    applies_to = "both" if "both" in sides or sides == {"color", "depth"} else a.applies_to
    # A person mask is a refinement: it holds only when every layer opts into it.
    shape = "mask" if a.shape == b.shape == "mask" else "box"
    return Rule(a.cls, action, margin=max(a.margin, b.margin), min_score=min(a.min_score, b.min_score),
                applies_to=applies_to, shape=shape)


def floor_rules() -> list[Rule]:
    return [f.as_rule() for f in FLOOR]


def announce_lowered(source: str) -> None:
    """Logged at every load while the floor is lowered: it must never go unnoticed."""
    log.critical("PRIVACY FLOOR LOWERED by %s: the built-in face rule (%s) is NOT enforced; policies alone "
                 "decide what is redacted; every manifest says floor: lowered",
                 source, "; ".join(f.describe() for f in FLOOR))


# Detection tuning a command may move only towards more privacy: +1 = only up, -1 = only down. The
# other way would make small or passing faces (and text) slip through while the floor's rule looks
# untouched. A key that does not exist (another face path's) is simply not guarded.
ONE_WAY: dict[str, int] = {
    "canary_every": -1, "detect_width": +1, "detect_height": +1, "tiles_per_frame": +1,
    "verify_candidates": +1, "verify_min_score": -1, "hold_frames": +1, "margin_growth": +1,
    "text_every": -1, "text_width": +1, "text_height": +1, "person_every": -1,
}
ONLY_ON = ("text_edge_pass",)  # switches a command may turn on, never off


def guard_setting(redact_cfg: Any, key: str, value: Any) -> None:
    """Refuse a `config set` (console, control socket, downlink) that would lower the floor or remove a
    layer: ConfigError naming the key. `key` is the dotted key without the `redact.` prefix."""
    from capture.config import ConfigError
    from redact.layers import load_layer

    if key == "floor":
        raise ConfigError(f"redact.floor: the privacy floor cannot be changed by a command; {LOWER_HOW} "
                          "(an installer's decision, on the device itself)")
    if key == "enabled" and value is not True:
        raise ConfigError("redact.enabled: redaction cannot be switched off by a command (the privacy floor); "
                          "only the device's config file or `run --no-redact` for trusted replays can")
    if key == "fleet_policy":
        raise ConfigError("redact.fleet_policy: the fleet policy layer changes only by a signed downlink "
                          "`policy update` (the wearer can add to it, never replace it)")
    if key in ONLY_ON and value is not True and getattr(redact_cfg, key, None) is True:
        raise ConfigError(f"redact.{key}: a command may only switch it on (more detection), not off; only the "
                          "device's own config file can")
    direction = ONE_WAY.get(key)
    current = getattr(redact_cfg, key, None)
    if (direction and isinstance(value, int | float) and not isinstance(value, bool)
            and isinstance(current, int | float) and (value - current) * direction < 0):
        way, more = ("raise", "more") if direction > 0 else ("lower", "less")
        raise ConfigError(f"redact.{key}: a command may only {way} it ({more} detection), not change it from "
                          f"{current} to {value}; only the device's own config file can change it the other way")
    if key == "policy" and isinstance(value, str) and value:
        load_layer(value, redact_cfg.floor)  # PolicyError naming the file and the rule below the floor
