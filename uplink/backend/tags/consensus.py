"""Crowd consensus: tags on one frame are grouped into regions; each region gets a majority label.

Tags of one frame whose boxes overlap (IoU ≥ `iou`) are one region. Each tagger has one vote per
region (their latest tag on it). The region is decided when at least `min_taggers` voted and the
winning label has at least `min_agreement` of the votes (a tie is never decided). Its box is the
coordinate-wise median of the winning votes' boxes, its class the winners' most common class, its
text (if taggers transcribed one) the winners' most common transcription.

A tagger's agreement rate is the share of their votes on decided regions that match the decision.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uplink.backend.tags.format import Tag, TagError


@dataclass
class Region:
    frame: tuple[str, str, int]
    bbox: tuple[float, float, float, float]
    label: str
    cls: str
    voters: int
    agreement: float
    decided: bool
    text: str | None = None
    tags: list[Tag] = field(default_factory=list)

    @property
    def private(self) -> bool:
        return self.decided and self.label == "private"

    def to_dict(self) -> dict[str, Any]:
        d, s, q = self.frame
        out = {"device": d, "session": s, "seq": q, "bbox": [round(v, 1) for v in self.bbox], "label": self.label,
               "class": self.cls, "voters": self.voters, "agreement": round(self.agreement, 3), "decided": self.decided}
        if self.text is not None:
            out["text"] = self.text
        return out


@dataclass
class Consensus:
    regions: list[Region]
    taggers: dict[str, dict[str, Any]]
    params: dict[str, Any]

    @property
    def decided(self) -> list[Region]:
        return [r for r in self.regions if r.decided]

    def frames(self) -> set[tuple[str, str, int]]:
        """Frames with at least one decided region (the judged frames)."""
        return {r.frame for r in self.regions if r.decided}

    def summary(self) -> dict[str, Any]:
        dec = self.decided
        return {**self.params, "regions": len(self.regions), "decided": len(dec),
                "undecided": len(self.regions) - len(dec),
                "private": sum(r.label == "private" for r in dec),
                "not_private": sum(r.label == "not_private" for r in dec),
                "judged_frames": len(self.frames())}


def iou(a: tuple[float, ...] | np.ndarray, b: tuple[float, ...] | np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def build(tags: list[Tag], *, min_taggers: int = 2, min_agreement: float = 0.6, iou_min: float = 0.5) -> Consensus:
    if min_taggers < 1:
        raise TagError(f"--min-taggers: expected ≥ 1, got {min_taggers}")
    if not 0.5 <= min_agreement <= 1.0:
        raise TagError(f"--min-agreement: expected 0.5-1 (a majority at least), got {min_agreement}")
    by_frame: dict[tuple[str, str, int], list[Tag]] = defaultdict(list)
    for t in tags:
        by_frame[t.frame].append(t)
    regions: list[Region] = []
    for frame in sorted(by_frame):
        clusters: list[list[Tag]] = []
        for t in sorted(by_frame[frame], key=lambda t: (t.time, t.line)):
            best, best_iou = None, iou_min
            for c in clusters:
                rep = np.median(np.array([x.bbox for x in c]), axis=0)
                v = iou(t.bbox, rep)
                if v >= best_iou:
                    best, best_iou = c, v
            if best is None:
                clusters.append([t])
            else:
                best.append(t)
        regions.extend(_decide(frame, c, min_taggers, min_agreement) for c in clusters)
    taggers: dict[str, dict[str, Any]] = {}
    votes: Counter[str] = Counter()
    agree: Counter[str] = Counter()
    for r in regions:
        for t in _votes(r.tags).values():
            taggers.setdefault(t.tagger, {})
            if r.decided:
                votes[t.tagger] += 1
                agree[t.tagger] += t.label == r.label
    for name in taggers:
        n = votes[name]
        taggers[name] = {"votes": n, "agreed": agree[name], "agreement": round(agree[name] / n, 3) if n else None}
    params = {"min_taggers": min_taggers, "min_agreement": min_agreement, "iou": iou_min}
    return Consensus(regions, dict(sorted(taggers.items())), params)


def _votes(tags: list[Tag]) -> dict[str, Tag]:
    latest: dict[str, Tag] = {}
    for t in sorted(tags, key=lambda t: (t.time, t.line)):
        latest[t.tagger] = t
    return latest


def _decide(frame: tuple[str, str, int], tags: list[Tag], min_taggers: int, min_agreement: float) -> Region:
    votes = _votes(tags)
    counts = Counter(t.label for t in votes.values())
    ranked = counts.most_common()
    label, n = ranked[0]
    tie = len(ranked) > 1 and ranked[1][1] == n
    voters = len(votes)
    agreement = n / voters
    decided = voters >= min_taggers and agreement >= min_agreement and not tie
    winners = [t for t in votes.values() if t.label == label]
    bbox = tuple(float(v) for v in np.median(np.array([t.bbox for t in winners]), axis=0))
    cls = Counter(t.cls for t in winners).most_common(1)[0][0]
    texts = Counter(t.text for t in winners if t.text)
    text = texts.most_common(1)[0][0] if texts else None
    return Region(frame, bbox, label, cls, voters, agreement, decided, text, list(tags))  # type: ignore[arg-type]
