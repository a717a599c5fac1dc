"""`crowdcap tags propose`: a new policy version from the crowd's consensus, with a reason per change.

1. **Thresholds.** For each class a loaded detector finds, the tagged frames are replayed with a very
   low threshold (replay.py) to get every candidate's score; the manifest's own regions keep their
   recorded scores. The proposed `min_score` is the lowest candidate threshold whose over-redaction
   for that class (score.py: redacted regions overlapping no consensus-private region, share of all
   redacted) stays within the bound. It is changed only when that raises the class's recall, or when
   the current threshold already breaks the bound (then raised).
2. **Text forms.** Consensus-private regions of a `custom:<name>` class with taggers' transcriptions
   become a `[[forms]]` entry (issue 11's syntax): a pattern of the transcriptions' shapes (digits →
   `[0-9]`, letters → `[A-Z]`, lengths as a range) — the backend sees only text the device sent in
   clear (the leaks), never the text of redacted regions. Without transcriptions the form is shape-only
   (`aspect` of the tagged boxes, from ≥ 3 regions). When the device detects persons and ≥ 80 % of
   the tagged regions lie on one (replayed), the form gets `inside = "person"` (a bib, not any number). A form is emitted only when the device's policy syntax has
   `[[forms]]` and the device's stage can run it (a detector provides its `from` class); otherwise it
   is listed as not emitted, with the reason.
3. **Exemplars and volumes** (private.py) for leaks of classes no detector finds and no new form
   covers: crops of sent pixels for `crowdcap privacy add-object`, and boxes triangulated from posed
   frames with depth for `crowdcap privacy add-volume` on the device they came from. They are device
   state, not policy: listed as commands (and in the file's header), not written into the TOML.
4. Everything else in the current policy file is kept as it is; `version` is bumped.
The result is checked by the real policy parser and stage before it is written.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from uplink.backend.tags import private, toml_out
from uplink.backend.tags.check import MAX_OVER_REDACTION
from uplink.backend.tags.consensus import Consensus, Region
from uplink.backend.tags.format import TagError
from uplink.backend.tags.replay import Replayer, policy_redactions
from uplink.backend.tags.score import COVER_MIN, evaluate
from uplink.backend.tags.sessions import FrameRec, Sessions, coverage

# Probe thresholds, lowest first: a detector may refuse a pass with too many candidates (a garbage guard).
PROBE_SCORES = (0.02, 0.05, 0.1)


def next_version(v: str) -> str:
    m = re.match(r"^(.*?)(\d+)$", v)
    return f"{m.group(1)}{int(m.group(2)) + 1}" if m else f"{v}-crowd-1"


def _calibrate(cls: str, cons: Consensus, sessions: Sessions, cands: dict[Any, list[dict[str, Any]]],
               current: Any, max_over: float, cover_min: float) -> dict[str, Any] | None:
    """The threshold proposal for one class, or None when nothing should change."""
    rule = current.rule_for(cls)
    cur_t = rule.min_score if rule else None

    def at(t: float) -> dict[str, Any]:
        def red(rec: FrameRec) -> tuple[list[dict[str, Any]], bool]:
            same = [r for r in rec.regions if r.get("class") == cls and isinstance(r.get("score"), int | float)]
            regs = [r for r in same if r["score"] >= t] + [r for r in cands.get(rec.key, []) if r["score"] >= t]
            return regs, rec.obscured
        return evaluate(cons, sessions, red, cover_min=cover_min).by_class[cls].to_dict()

    private = [r for r in cons.decided if r.private and r.cls == cls]
    # thresholds that change the outcome on tagged data: the best score of the candidates covering each region
    useful = set()
    for reg in private:
        rec = sessions.get(reg.frame)
        if rec is None:
            continue
        pool = [r for r in rec.regions if r.get("class") == cls and isinstance(r.get("score"), int | float)]
        pool += cands.get(reg.frame, [])
        good = [r["score"] for r in pool if coverage(reg.bbox, [tuple(r["bbox"])]) >= cover_min]
        if good:
            useful.add(math.floor(max(good) * 1000) / 1000)
    if cur_t is not None:
        useful.add(cur_t)
    if not useful:
        return None
    base = at(cur_t) if cur_t is not None else None
    ok = [(t, s) for t in sorted(useful) if t >= 0.01 and (s := at(t))["over_redaction"] <= max_over]
    if not ok:
        return {"class": cls, "from": cur_t, "to": None, "before": base,
                "why": f"{cls}: no threshold keeps over-redaction ≤ {max_over}; unchanged"}
    t, s = ok[0]
    if base is not None and t == cur_t:
        return None
    if base is not None and (s["recall"] or 0) <= (base["recall"] or 0) and base["over_redaction"] <= max_over:
        return None
    def fmt(x: dict[str, Any] | None) -> str:
        if x is None:
            return "no rule"
        return (f"recall {x['recall']} ({x['covered']}/{x['private']}), over-redaction {x['over_redaction']} "
                f"({x['over_redacted']}/{x['redacted']})")
    why = (f"{cls}: min_score {cur_t} → {t}: lowest threshold with over-redaction ≤ {max_over} on "
           f"{len(private)} tagged-private regions; before {fmt(base)}; after {fmt(s)}")
    return {"class": cls, "from": cur_t, "to": t, "before": base, "after": s, "why": why}


def _shape(text: str) -> str:
    out = []
    for ch in text:
        out.append("9" if ch.isdigit() else "A" if ch.isalpha() else ch)
    return "".join(out)


def _shape_regex(shape: str) -> str:
    """'AA-999' → '[A-Z]{2}-[0-9]{3}'."""
    out = []
    for ch, run in ((m.group(0)[0], len(m.group(0))) for m in re.finditer(r"(.)\1*", shape)):
        atom = "[0-9]" if ch == "9" else "[A-Z]" if ch == "A" else ch if ch in " -_/" else re.escape(ch)
        out.append(atom + (f"{{{run}}}" if run > 1 else ""))
    return "".join(out)


def text_form(name: str, regions: list[Region]) -> dict[str, Any] | None:
    """A [[forms]] entry from consensus-private regions of `custom:<name>` (transcriptions if any)."""
    texts = [r.text.strip().upper() for r in regions if r.text and r.text.strip()]
    aspects = [(r.bbox[2] - r.bbox[0]) / max(1e-6, r.bbox[3] - r.bbox[1]) for r in regions]
    form: dict[str, Any] = {"name": name, "from": "text"}
    if texts:
        classes = set()
        for t in texts:
            classes |= {"0-9" if c.isdigit() else "A-Z" if c.isalpha() else re.escape(c) for c in t}
        lo, hi = min(map(len, texts)), max(map(len, texts))
        rng = f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"
        if classes == {"0-9"}:
            form["match"] = f"^[0-9]{rng}$"
        else:
            shapes = sorted({_shape(t) for t in texts})
            if len(shapes) <= 3 and all(len(s) <= 12 for s in shapes):
                alts = [_shape_regex(s) for s in shapes]
                form["match"] = "^(" + "|".join(alts) + ")$" if len(alts) > 1 else f"^{alts[0]}$"
            else:
                form["match"] = f"^[{''.join(sorted(classes))}]{rng}$"
    if aspects and "match" not in form:  # a pattern is enough; the detector's boxes are padded unlike taggers'
        form["aspect"] = [round(min(aspects) * 0.8, 2), round(max(aspects) * 1.25, 2)]
    if "match" not in form and len(regions) < 3:
        return None  # shape only from one or two boxes: too weak to become a rule
    return form


def _boxes(replayer: Replayer, current: Any, keys: list[Any], cls: str) -> dict[Any, list[dict[str, Any]]] | None:
    """Boxes of `cls` (person, text) the device finds on these frames (replayed); None if it cannot."""
    from redact.policy import Rule

    if not keys or not replayer.provides(cls):
        return None
    probe = replace(current, rules=(Rule(cls, "blur", margin=0.0, min_score=0.3),), version=f"probe-{cls}")
    try:
        found = replayer.detect(probe, keys)
    except ValueError:
        return None
    return {k: [r for r in v if r.get("class") == cls] for k, v in found.items()}


def _share_on(regs: list[Region], boxes: dict[Any, list[dict[str, Any]]] | None, need: float) -> list[Region]:
    """The regions at least `need` of whose area lies in one of the frame's boxes."""
    if boxes is None:
        return []
    return [r for r in regs if any(coverage(r.bbox, [tuple(b["bbox"])]) >= need for b in boxes.get(r.frame, []))]


def _floor():
    try:
        from redact import floor  # the privacy floor (issue 16): devices refuse a policy below it
    except ImportError:
        return None
    return floor if hasattr(floor, "check") else None


def floor_holds(policy: Any) -> bool:
    """The policy is within the privacy floor (or this build has none). A current policy below it means
    the fleet's devices run with the floor lowered (their installer's decision): proposals are not held
    to it either."""
    floor = _floor()
    if floor is None:
        return True
    try:
        floor.check(policy)
    except Exception:
        return False
    return True


def _refused(raw: dict[str, Any], replayer: Replayer, *, check_floor: bool = True) -> str:
    """Why the device would refuse (or could not run) this policy; "" when it would run it."""
    from redact.policy import parse_policy
    from redact.stage import RedactStage

    try:
        policy = parse_policy(raw, "proposed policy")
    except Exception as e:  # e.g. this build's policy syntax has no [[forms]] (issue 11)
        return f"the device's policy syntax refuses it ({e})"
    floor = _floor() if check_floor else None
    if floor is not None:
        try:
            floor.check(policy)
        except Exception as e:
            return f"it is below the privacy floor devices enforce ({e})"
    err = RedactStage(replayer.cfg, policy, replayer._base.detectors)._policy_error
    return f"no loaded detector provides it: the device would withhold every frame ({err})" if err else ""


def propose(cons: Consensus, sessions: Sessions, current_path: str | Path, *, max_over: float = MAX_OVER_REDACTION,
            cover_min: float = COVER_MIN, version: str | None = None, redact_cfg: Any = None,
            exemplar_dir: Path | None = None) -> dict[str, Any]:
    from redact.policy import Rule, load_policy, parse_policy
    from redact.stage import RedactStage

    current = load_policy(current_path)
    enforced = floor_holds(current)
    raw = tomllib.loads(Path(current_path).read_text(encoding="utf-8"))
    keys = [k for k in cons.frames() if sessions.get(k) is not None]
    replayer = Replayer(sessions, redact_cfg)
    changes: list[dict[str, Any]] = []
    not_emitted: list[dict[str, Any]] = []
    rules = [dict(r) for r in raw.get("rules", [])]
    private_classes = {r.cls for r in cons.decided if r.private}

    # 1. thresholds, for classes the detectors find
    found: dict[Any, list[dict[str, Any]]] = {}
    for i, score in enumerate(PROBE_SCORES):
        probe_rules = []
        for cls in replayer.classes:
            rule = current.rule_for(cls)
            probe_rules.append(replace(rule, min_score=score, action="blur") if rule else
                               Rule(cls, "blur", margin=0.35, min_score=score))
        probe = replace(current, rules=tuple(probe_rules), version="probe")
        try:
            found = replayer.detect(probe, keys)
            break
        except ValueError as e:
            if "model_garbage" not in str(e) or i == len(PROBE_SCORES) - 1:
                raise
    for cls in replayer.classes:
        if cls not in private_classes and current.rule_for(cls) is None:
            continue
        cands = {k: [r for r in v if r.get("class") == cls] for k, v in found.items()}
        c = _calibrate(cls, cons, sessions, cands, current, max_over, cover_min)
        if c is None:
            continue
        if c["to"] is None:
            not_emitted.append(c)
            continue
        entry = next((r for r in rules if r.get("class") == cls), None)
        trial = [dict(r) for r in rules]
        if entry is None:
            trial.append({"class": cls, "action": "blur", "margin": 0.35, "applies_to": "both", "min_score": c["to"]})
        else:
            trial[rules.index(entry)]["min_score"] = c["to"]
        refused = _refused({**raw, "version": "trial", "rules": trial}, replayer, check_floor=enforced)
        if refused:  # e.g. raising the face threshold above the privacy floor
            not_emitted.append({**c, "why": f"{c['why']}: not emitted, {refused}"})
            continue
        rules[:] = trial
        changes.append({"kind": "threshold", **c})

    # 2. text forms from custom:<name> regions the policy does not cover yet
    by_form: dict[str, list[Region]] = defaultdict(list)
    for r in cons.decided:
        if r.private and r.cls.startswith("custom:") and current.rule_for(r.cls) is None:
            by_form[r.cls[7:]].append(r)
    forms = [dict(f) for f in raw.get("forms", [])]
    form_keys = sorted({r.frame for rs in by_form.values() for r in rs})
    person_boxes = _boxes(replayer, current, form_keys, "person")
    text_boxes = _boxes(replayer, current, form_keys, "text") if by_form else None
    for name, regs in sorted(by_form.items()):
        form = text_form(name, regs)
        n_text = sum(1 for r in regs if r.text)
        why = (f"custom:{name}: {len(regs)} tagged-private regions ({n_text} transcribed) → "
               + (f"match {form['match']!r}" if form and "match" in form else "shape only")
               + (f", aspect {form['aspect']}" if form and "aspect" in form else ""))
        if form is None:
            not_emitted.append({"kind": "form", "form": name, "why": why + ": too few regions for a shape-only form"})
            continue
        on_text = _share_on(regs, text_boxes, 0.5)
        if "match" not in form and len(on_text) < 0.8 * len(regs):  # shape only: it must be text the device sees
            not_emitted.append({"kind": "form", "form": form, "why": f"{why}: not emitted, the device's text detector "
                                f"finds text on {len(on_text)}/{len(regs)} of the tagged regions"})
            continue
        if person_boxes is not None:
            inside = _share_on(regs, person_boxes, 0.6)
            if len(inside) >= max(2, 0.8 * len(regs)):
                form["inside"] = "person"
                why += f", inside a person ({len(inside)}/{len(regs)} of the tagged regions are)"
        rule = {"class": f"custom:{name}", "action": "blur", "margin": 0.2, "applies_to": "both"}
        refused = _refused({**raw, "version": "trial", "rules": rules + [rule], "forms": forms + [form]}, replayer,
                           check_floor=enforced)
        if refused:
            not_emitted.append({"kind": "form", "form": form, "why": f"{why}: not emitted, {refused}"})
            continue
        forms.append(form)
        rules.append(rule)
        changes.append({"kind": "form", "form": form, "why": why})

    new_raw = dict(raw)
    new_raw["version"] = version or next_version(current.version)
    new_raw["rules"] = rules
    if forms:
        new_raw["forms"] = forms
    new_policy = parse_policy(new_raw, "proposed policy")

    # 3. exemplars and volumes for leaks nothing above catches
    formed = {f"custom:{c['form']['name']}" for c in changes if c["kind"] == "form"}
    leaks = {(x["device"], x["session"], x["seq"], tuple(x["bbox"])) for x in evaluate(cons, sessions).leaks}
    rest = [r for r in cons.decided if r.private and not replayer.provides(r.cls) and r.cls not in formed
            and (*r.frame, tuple(round(v, 1) for v in r.bbox)) in leaks]
    device_actions = private.volumes(rest, sessions) + private.exemplars(rest, sessions, exemplar_dir)
    stage = RedactStage(replayer.cfg, new_policy, replayer._base.detectors)
    if stage._policy_error:
        raise TagError(f"proposed policy would not run on the device: {stage._policy_error}")
    # the calibration above estimates from one low-threshold pass; the replay with the policy itself is
    # what `tags check` will see (the detector's candidate verification depends on the threshold)
    replayed = evaluate(cons, sessions, policy_redactions(replayer, new_policy, keys), cover_min=cover_min)
    replayed_doc = replayed.overall.to_dict()
    comments = {}
    for i, r in enumerate(new_raw["rules"]):
        comments[f"rules[{i}]"] = [c["why"] for c in changes if c.get("class") == r.get("class")
                                   or (c["kind"] == "form" and r.get("class") == f"custom:{c['form']['name']}")]
    header = [f"# proposed by `crowdcap tags propose` from {current_path} ({current.version})",
              f"# {len(changes)} change(s); over-redaction bound {max_over}; consensus: min "
              f"{cons.params['min_taggers']} taggers, agreement ≥ {cons.params['min_agreement']}"]
    header.append(f"# replayed on the {len(keys)} judged frames: recall {replayed_doc['recall']} "
                  f"({replayed_doc['covered']}/{replayed_doc['private']}), over-redaction "
                  f"{replayed_doc['over_redaction']} ({replayed_doc['over_redacted']}/{replayed_doc['redacted']})")
    header += [f"# device-side: {a['why']}\n#   {a['command']}" for a in device_actions]
    text = "\n".join(header) + "\n" + toml_out.dumps(new_raw, comments)
    parse_policy(tomllib.loads(text), "proposed policy (written form)")
    return {"version": new_raw["version"], "from_version": current.version, "changes": changes,
            "not_emitted": not_emitted, "device_actions": device_actions, "replayed": replayed_doc,
            "frames_replayed": replayer.frames_replayed,
            "toml": text}
