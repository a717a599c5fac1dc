"""Layered policy: effective = privacy floor ∪ built-in default ∪ fleet policy ∪ wearer policy.

* floor + built-in: the privacy floor's face rule (`redact.floor`) and the rest of the built-in default
  policy (plates), version `DEFAULT_POLICY.version` — both absent when the device's config file lowers
  the floor.
* fleet: signed, arrives over the downlink (`policy update`), stored in `redact.fleet_policy`
  (default `<state_dir>/fleet-policy.toml`, set when the first update lands).
* wearer: `redact.policy` (the `--policy` flag, the console `config set redact.policy`).

Union means: a class is private if any layer says so, and a class named by several layers gets the
strictest of their rules (strongest action, colour and depth if any layer wants either, lowest
min_score, largest margin). So the wearer can only add privacy to the fleet's rules and the fleet
cannot remove what the wearer added. Each layer is validated against the floor (an error names the
file and rule). `on_fault` is the most specific layer's (wearer, else fleet, else "withhold"): both
choices are fail-closed. The effective policy's `version` is the most specific layer's; `layers`
names every layer's version (the manifest carries them) and `sources` says where each rule came
from ("floor", "fleet", "wearer", or "floor+wearer" when several layers name the class).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redact import floor
from redact.policy import DEFAULT_POLICY, Policy, Rule, load_policy

BUILT_IN_VERSION = DEFAULT_POLICY.version  # the floor plus the rest of the built-in default


def effective(wearer: Policy | None, fleet: Policy | None, floor_state: str = floor.ENFORCED) -> Policy:
    """The union of the layers (see module doc). Layers must have been checked against the floor."""
    merged: dict[str, Rule] = {}
    sources: dict[str, list[str]] = {}
    layers: list[tuple[str, str]] = []

    def add(name: str, rules: list[Rule] | tuple[Rule, ...]) -> None:
        for r in rules:
            merged[r.cls] = floor.stricter(merged[r.cls], r) if r.cls in merged else r
            sources.setdefault(r.cls, []).append(name)

    forms: dict[str, Any] = {}  # a form's name is claimed by the first layer that defines it

    if floor_state != floor.LOWERED:
        add("floor", floor.floor_rules())
        # The rest of the built-in default (plates, as EgoBlur and Mapillary do) is a layer like the others.
        add("built-in", [r for r in DEFAULT_POLICY.rules if floor.floor_rule(r.cls) is None])
        layers.append(("built-in", BUILT_IN_VERSION))
    for name, layer in (("fleet", fleet), ("wearer", wearer)):
        if layer is not None:
            add(name, layer.rules)
            for form in layer.forms:
                forms.setdefault(form.name, form)
            layers.append((name, layer.version))
    top = wearer or fleet
    return Policy(version=top.version if top else BUILT_IN_VERSION, on_fault=top.on_fault if top else "withhold",
                  rules=tuple(merged.values()), origin=top.origin if top else "built-in",
                  forms=tuple(forms.values()),
                  sources=tuple("+".join(sources[c]) for c in merged), layers=tuple(layers), floor=floor_state)


def load_layer(path: str | Path | None, floor_state: str) -> Policy | None:
    """One layer's policy file (None for no file), checked against the floor unless it is lowered."""
    if not path:
        return None
    policy = load_policy(path)
    if floor_state != floor.LOWERED:
        floor.check(policy)
    return policy


@dataclass
class PolicyLayers:
    """The layer files in force; `load` / `with_wearer` / `with_fleet` return the effective policy and
    change the files in force only when the new one is valid."""

    wearer_path: str = ""
    fleet_path: str = ""
    floor_state: str = floor.ENFORCED

    @classmethod
    def from_config(cls, cfg: Any) -> PolicyLayers:
        return cls(cfg.policy or "", getattr(cfg, "fleet_policy", "") or "",
                   getattr(cfg, "floor", floor.ENFORCED))

    def load(self) -> Policy:
        if self.floor_state == floor.LOWERED:
            floor.announce_lowered("[redact] floor in the device's config file")
        return effective(load_layer(self.wearer_path, self.floor_state),
                         load_layer(self.fleet_path, self.floor_state), self.floor_state)

    def with_wearer(self, path: str | Path | None) -> Policy:
        policy = PolicyLayers(str(path or ""), self.fleet_path, self.floor_state).load()
        self.wearer_path = str(path or "")
        return policy

    def with_fleet(self, path: str | Path | None) -> Policy:
        policy = PolicyLayers(self.wearer_path, str(path or ""), self.floor_state).load()
        self.fleet_path = str(path or "")
        return policy


def describe(policy: Policy) -> tuple[dict[str, Any], str]:
    """(JSON, text) for `config show` and the console's `policy`: every rule and where it came from."""
    data = policy.to_dict()
    lines = [f"policy {policy.version} (floor {policy.floor}; layers: "
             + ", ".join(f"{k} {v}" for k, v in policy.layers) + f"; on_fault {policy.on_fault})"]
    for r in data["rules"]:
        lines.append(f"  {r['class']}: {r['action']}, {r['applies_to']}, min_score {r['min_score']}, "
                     f"margin {r['margin']}  [{r.get('source', '?')}]")
    if not data["rules"]:
        lines.append("  (no rules: nothing is redacted)")
    return data, "\n".join(lines)
