"""`crowdcap tags score`: the crowd's consensus against what the devices redacted.

A *judged frame* is a frame with at least one decided consensus region; it is judged for the classes
of its decided regions (a redaction of a class nobody tagged in that frame is `unjudged`). In a
judged frame:
- a consensus-private region is **covered** when at least `cover_min` of its area lies inside the
  colour-redacted boxes of the frame's manifest (an obscured frame covers everything); otherwise it is
  a **leak** (its pixels were sent in clear);
- a redacted region that overlaps no consensus-private region (intersection ≥ 30 % of the smaller box)
  is **over-redaction** (closed world: in a judged frame, what is private is what the crowd called
  private; explicit not_private tags are counted too);
- recall = covered / private, precision = 1 − over-redaction rate = (redacted − over) / redacted.

Counts are grouped per class/form (the consensus class for private regions, the device's class for
redacted ones) and per model+policy version (from each frame's manifest), so two versions compare side
by side. `evaluate(..., redactions=...)` scores other redactions of the same frames (check, propose).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uplink.backend.tags.consensus import Consensus
from uplink.backend.tags.sessions import FrameRec, Key, Sessions, coverage, overlaps

COVER_MIN = 0.8
MAX_LISTED = 200


@dataclass
class Stats:
    private: int = 0
    covered: int = 0
    redacted: int = 0
    over: int = 0
    tagged_not_private: int = 0
    held: int = 0
    held_over: int = 0
    unjudged: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"private": self.private, "covered": self.covered, "leaks": self.private - self.covered,
                "recall": round(self.covered / self.private, 4) if self.private else None,
                "redacted": self.redacted, "over_redacted": self.over,
                "over_redaction": round(self.over / self.redacted, 4) if self.redacted else 0.0,
                "precision": round((self.redacted - self.over) / self.redacted, 4) if self.redacted else None,
                "redacted_tagged_not_private": self.tagged_not_private, "held": self.held, "held_over": self.held_over,
                "unjudged": self.unjudged}


@dataclass
class Evaluation:
    overall: Stats = field(default_factory=Stats)
    by_class: dict[str, Stats] = field(default_factory=lambda: defaultdict(Stats))
    by_version: dict[str, dict[str, Stats]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(Stats)))
    leaks: list[dict[str, Any]] = field(default_factory=list)
    over: list[dict[str, Any]] = field(default_factory=list)
    missing_frames: list[Key] = field(default_factory=list)
    judged_frames: int = 0

    def _add(self, version: str, cls: str, attr: str, n: int = 1) -> None:
        for s in (self.overall, self.by_class[cls], self.by_version[version]["*"], self.by_version[version][cls]):
            setattr(s, attr, getattr(s, attr) + n)

    def to_dict(self) -> dict[str, Any]:
        return {"judged_frames": self.judged_frames, "missing_frames": len(self.missing_frames),
                "overall": self.overall.to_dict(),
                "by_class": {c: s.to_dict() for c, s in sorted(self.by_class.items())},
                "by_version": {v: {"overall": d["*"].to_dict(),
                                   "by_class": {c: s.to_dict() for c, s in sorted(d.items()) if c != "*"}}
                               for v, d in sorted(self.by_version.items())},
                "leaks": self.leaks[:MAX_LISTED], "over_redactions": self.over[:MAX_LISTED]}


Redactions = Callable[[FrameRec], tuple[list[dict[str, Any]], bool]]


def observed(rec: FrameRec) -> tuple[list[dict[str, Any]], bool]:
    """What the device did: the manifest's colour-redacted regions, and whether the frame was obscured."""
    return [r for r in rec.regions if r.get("applies_to", "both") in ("color", "both")], rec.obscured


def evaluate(cons: Consensus, sessions: Sessions, redactions: Redactions = observed, *,
             cover_min: float = COVER_MIN, version: Callable[[FrameRec], str] | None = None) -> Evaluation:
    ev = Evaluation()
    by_frame: dict[Key, list[Any]] = defaultdict(list)
    for r in cons.decided:
        by_frame[r.frame].append(r)
    for key in sorted(by_frame):
        rec = sessions.get(key)
        if rec is None:
            ev.missing_frames.append(key)
            continue
        ev.judged_frames += 1
        regs, obscured = redactions(rec)
        ver = version(rec) if version else rec.version
        boxes = [tuple(float(v) for v in r["bbox"]) for r in regs]
        private = [r for r in by_frame[key] if r.label == "private"]
        not_private = [r for r in by_frame[key] if r.label == "not_private"]
        for r in private:
            cov = 1.0 if obscured else coverage(r.bbox, boxes)
            ev._add(ver, r.cls, "private")
            if cov >= cover_min:
                ev._add(ver, r.cls, "covered")
            else:
                ev.leaks.append({**r.to_dict(), "coverage": round(cov, 3), "version": ver})
        judged_classes = {r.cls for r in by_frame[key]}
        for reg, box in zip(regs, boxes, strict=True):
            cls = str(reg.get("class", "?"))
            if cls not in judged_classes:
                ev._add(ver, cls, "unjudged")
                continue
            held = reg.get("source") == "propagated"
            ev._add(ver, cls, "held" if held else "redacted")
            if not any(overlaps(box, p.bbox) for p in private):
                if held:
                    ev._add(ver, cls, "held_over")
                    continue
                ev._add(ver, cls, "over")
                tagged = any(overlaps(box, n.bbox) for n in not_private)
                if tagged:
                    ev._add(ver, cls, "tagged_not_private")
                ev.over.append({"device": key[0], "session": key[1], "seq": key[2], "bbox": [round(v, 1) for v in box],
                                "class": cls, "score": reg.get("score"), "tagged_not_private": tagged,
                                "version": ver})
    return ev


def score(cons: Consensus, sessions: Sessions, *, cover_min: float = COVER_MIN) -> dict[str, Any]:
    """The `tags score --json` document."""
    ev = evaluate(cons, sessions, cover_min=cover_min)
    out = {"consensus": cons.summary(), "taggers": cons.taggers, "cover_min": cover_min, **ev.to_dict()}
    if ev.missing_frames:
        out["missing_frame_examples"] = [list(k) for k in ev.missing_frames[:10]]
    return out


def table(doc: dict[str, Any]) -> str:
    """The human-readable summary of a score document."""
    c = doc["consensus"]
    lines = [f"consensus: {c['decided']} decided regions ({c['private']} private, {c['not_private']} not private), "
             f"{c['undecided']} undecided; min {c['min_taggers']} taggers, agreement ≥ {c['min_agreement']}; "
             f"{doc['judged_frames']} judged frames" + (f", {doc['missing_frames']} tagged frames not in the sessions"
                                                        if doc["missing_frames"] else "")]
    head = f"{'version':<40} {'class':<16} {'private':>7} {'leaks':>6} {'recall':>7} {'redacted':>8} {'over':>5} {'precision':>9}"
    lines += ["", head, "-" * len(head)]

    def row(ver: str, cls: str, s: dict[str, Any]) -> str:
        rec = "-" if s["recall"] is None else f"{s['recall']:.3f}"
        prec = "-" if s["precision"] is None else f"{s['precision']:.3f}"
        return (f"{ver[:40]:<40} {cls[:16]:<16} {s['private']:>7} {s['leaks']:>6} {rec:>7} {s['redacted']:>8} "
                f"{s['over_redacted']:>5} {prec:>9}")

    for ver, d in doc["by_version"].items():
        lines.append(row(ver, "(all)", d["overall"]))
        lines += [row("", cls, s) for cls, s in d["by_class"].items()]
    lines.append(row("all versions", "(all)", doc["overall"]))
    lines += ["", "taggers: " + ", ".join(
        f"{name} {t['agreement'] if t['agreement'] is not None else '-'} ({t['agreed']}/{t['votes']})"
        for name, t in doc["taggers"].items())]
    return "\n".join(lines)
