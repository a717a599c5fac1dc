"""Rule-defined private forms: new private classes from detector outputs and relations, no code.

    [[forms]]
    name = "bib"                      # usable as class = "custom:bib" in [[rules]]
    from = "text"                     # a detector (text | person | screen) or another form's name
    match = '^[0-9]{1,6}$'            # regex (Python `re.search`) on the recognised text (text forms)
    inside = "person"                 # only where the box's centre lies in a box of this detector/form
                                      # (person: the person model's boxes and bodies below detected faces)
    aspect = [2.0, 6.0]               # width/height of the box, inclusive range
    min_lines = 3                     # a block of ≥ 3 text lines → the whole block's box (text forms)

Filters apply in this order: match, aspect, inside (to the source's boxes), then min_lines groups
what is left into blocks. A form from another form starts from that form's boxes. The built-in
form `plate` (class "plate": text in a plate-shaped box matching an EU or US pattern) is what the
default policy redacts besides faces.

Recognised text is read only for boxes that reach a `match` filter, is matched in memory, and is
never returned: results are boxes and scores only. A line the reader could not read in time, could
not read at all (below its confidence threshold: a far plate) or that the frame's edge cuts (a
fragment) counts as a match: it stays private until it is read whole and shown not to match. Errors name the file, `forms[i].field` and value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from capture.configcore import InputError

DETECTORS = ("text", "person", "screen")
INSIDE_GROW = 0.1  # a box is inside a container when its centre is in the container grown by 10 %
NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class Form:
    name: str
    source: str  # a detector or a form name
    match: re.Pattern[str] | None = None
    inside: str | None = None
    aspect: tuple[float, float] | None = None
    min_lines: int = 0
    cls: str = ""  # the class rules use: "custom:NAME", or a built-in name

    @property
    def class_name(self) -> str:
        return self.cls or f"custom:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "from": self.source}
        if self.match is not None:
            d["match"] = self.match.pattern
        if self.inside:
            d["inside"] = self.inside
        if self.aspect:
            d["aspect"] = list(self.aspect)
        if self.min_lines:
            d["min_lines"] = self.min_lines
        return d


# Plates are text: a plate-shaped line whose characters follow a national pattern. EU: German-style
# district + letters + digits ("M AB 1234"; the two letter groups apart, or at most 3 letters in a run
# when the reader drops the gap: "EXIT 12" on a sign is not a plate), FR/IT "AB-123-CD", ES "1234 BCD",
# UK "AB12 CDE", NL sidecodes "12-ABC-3"; US: 5-8 letters and digits, both present ("7ABC123",
# "ABC-1234"). Words that label signs with a number ("ROOM 204", "GATE 12") are not plates; a
# plate's frame or screws read as brackets or bars at either end ("MAB 1234]") are ignored.
PLATE_BORDER = r"[\[\](){}|.,:;'_-]*"
PLATE_SIGN_WORDS = r"(?!(?:EXIT|ROOM|GATE|DOOR|HALL|LANE|ROAD|ZONE|AREA|UNIT|BUS|BAY|PIER|TRACK)(?:[- ]|[0-9]))"
PLATE_PATTERN = (
    rf"^{PLATE_BORDER}{PLATE_SIGN_WORDS}(?:(?:[A-Z]{{1,3}}[- ][A-Z]{{1,2}}|[A-Z]{{1,3}})[- ]?[0-9]{{1,4}}[A-Z]?"
    r"|[A-Z]{2}[- ]?[0-9]{3}[- ]?[A-Z]{2}"
    r"|[0-9]{4}[- ]?[A-Z]{3}"
    r"|[A-Z]{2}[0-9]{2} ?[A-Z]{3}"
    r"|[0-9A-Z]{1,3}-[0-9A-Z]{2,3}-[0-9A-Z]{1,2}"
    rf"|(?=[^A-Z]*[A-Z])(?=[^0-9]*[0-9])[A-Z0-9]{{2,4}}[- ]?[A-Z0-9]{{3,4}}){PLATE_BORDER}$")
BUILTIN_FORMS = {
    # Case-blind: recognisers confuse case on worn or partly hidden plates ("Mab1" for "MAB1...").
    "plate": Form(name="plate", source="text", match=re.compile(PLATE_PATTERN, re.IGNORECASE), aspect=(1.5, 8.0),
                  cls="plate"),
}


class FormError(InputError):
    """An invalid [[forms]] entry; the message names the form and field."""


def parse_forms(raw: Any, origin: str) -> tuple[Form, ...]:
    """Validated forms of a policy's `forms` array (dependencies checked, cycles refused)."""
    if not isinstance(raw, list):
        raise FormError(f"{origin}: forms: expected an array of tables ([[forms]]), got {raw!r}")
    forms: list[Form] = []
    names: dict[str, int] = {}
    for i, t in enumerate(raw):
        key = f"forms[{i}]"
        if not isinstance(t, dict):
            raise FormError(f"{origin}: {key}: expected a table, got {t!r}")
        label = f"{key} ({t.get('name')!r})" if isinstance(t.get("name"), str) else key
        known = {"name", "from", "match", "inside", "aspect", "min_lines"}
        unknown = sorted(set(t) - known)
        if unknown:
            raise FormError(f"{origin}: {label}.{unknown[0]}: no such field (known: {', '.join(sorted(known))})")
        name = t.get("name")
        if not isinstance(name, str) or not NAME.match(name.removeprefix("custom:")):
            raise FormError(f"{origin}: {key}.name: expected a lowercase name (a-z, 0-9, _; up to 32), got {name!r}")
        name = name.removeprefix("custom:")
        if name in DETECTORS or name in BUILTIN_FORMS or name == "face":
            raise FormError(f"{origin}: {key}.name: {name!r} is a built-in class; choose another name")
        if name in names:
            raise FormError(f"{origin}: {label}.name: {name!r} is already defined by forms[{names[name]}]")
        names[name] = i
        source = t.get("from")
        if not isinstance(source, str) or not source:
            raise FormError(f"{origin}: {label}.from: expected a detector ({', '.join(DETECTORS)}) or a form name, "
                            f"got {source!r}")
        match = t.get("match")
        pattern = None
        if match is not None:
            if not isinstance(match, str) or not match:
                raise FormError(f"{origin}: {label}.match: expected a regular expression string, got {match!r}")
            try:
                pattern = re.compile(match)
            except re.error as e:
                raise FormError(f"{origin}: {label}.match: invalid regular expression {match!r}: {e}") from None
        inside = t.get("inside")
        if inside is not None and (not isinstance(inside, str) or not inside):
            raise FormError(f"{origin}: {label}.inside: expected a detector or form name, got {inside!r}")
        aspect = t.get("aspect")
        if aspect is not None:
            if (not isinstance(aspect, list) or len(aspect) != 2
                    or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                               for v in aspect) or aspect[0] > aspect[1]):
                raise FormError(f"{origin}: {label}.aspect: expected [min, max] width/height ratios (0 < min ≤ max), "
                                f"got {aspect!r}")
            aspect = (float(aspect[0]), float(aspect[1]))
        min_lines = t.get("min_lines", 0)
        if isinstance(min_lines, bool) or not isinstance(min_lines, int) or not 0 <= min_lines <= 100:
            raise FormError(f"{origin}: {label}.min_lines: expected an integer 0-100, got {min_lines!r}")
        forms.append(Form(name=name, source=source.removeprefix("custom:"), match=pattern,
                          inside=inside.removeprefix("custom:") if inside else None, aspect=aspect,
                          min_lines=min_lines))
    _check_references(forms, origin)
    return tuple(forms)


def _check_references(forms: list[Form], origin: str) -> None:
    by_name = {f.name: f for f in forms}
    known = f"detectors: {', '.join(DETECTORS)}; forms: {', '.join(by_name) or 'none'}"
    for i, f in enumerate(forms):
        for fld, ref in (("from", f.source), ("inside", f.inside)):
            if ref is not None and ref not in DETECTORS and ref not in by_name and ref not in BUILTIN_FORMS:
                raise FormError(f"{origin}: forms[{i}] ({f.name!r}).{fld}: unknown detector or form {ref!r} ({known})")
    for i, f in enumerate(forms):  # cycles through from/inside
        path = [f.name]
        _walk(f, by_name, path, origin, i)
        if (f.match is not None or f.min_lines) and root(f, by_name) != "text":
            fld = "match" if f.match is not None else "min_lines"
            raise FormError(f"{origin}: forms[{i}] ({f.name!r}).{fld}: only for forms from text "
                            f"(this one is from {root(f, by_name)!r})")


def _walk(f: Form, by_name: dict[str, Form], path: list[str], origin: str, index: int, first: str = "") -> None:
    for fld, ref in (("from", f.source), ("inside", f.inside)):
        nxt = by_name.get(ref) if ref else None
        if nxt is None:
            continue
        if nxt.name in path:
            cycle = " → ".join([*path[path.index(nxt.name):], nxt.name])
            raise FormError(f"{origin}: forms[{index}] ({path[0]!r}).{first or fld}: cycle {cycle}")
        _walk(nxt, by_name, [*path, nxt.name], origin, index, first or fld)


def root(f: Form, by_name: dict[str, Form]) -> str:
    """The detector a form's boxes come from."""
    seen = 0
    while f.source not in DETECTORS and seen < 100:
        f = by_name.get(f.source) or BUILTIN_FORMS[f.source]
        seen += 1
    return f.source


def needed(forms: dict[str, Form], classes: list[str]) -> tuple[list[Form], set[str]]:
    """(forms to evaluate, in dependency order; detectors they and the plain classes need)."""
    order: list[Form] = []
    detectors: set[str] = set()

    def visit(name: str) -> None:
        if name in DETECTORS:
            detectors.add(name)
            return
        f = forms.get(name) or BUILTIN_FORMS.get(name)
        if f is None or f in order:
            return
        visit(f.source)
        if f.inside:
            visit(f.inside)
        order.append(f)

    for c in classes:
        visit(c.removeprefix("custom:"))
    if "screen" in detectors:
        detectors.add("text")  # screens are bright rectangles with text in them
    return order, detectors


@dataclass
class Found:
    """Boxes of one detector or form in one frame: N×5 (x1, y1, x2, y2, score) and, for text-rooted
    boxes, the text lines each is made of (indices into the frame's text detections)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    members: list[list[int]] = field(default_factory=list)


# Text of the lines it was asked for; None (or left out) = unknown: not read yet, unreadable, or cut
# by the frame's edge — such a line counts as a match (private until read and shown not to match).
Reader = Callable[[list[int]], dict[int, str | None]]


def evaluate(order: list[Form], base: dict[str, Found], read: Reader) -> dict[str, Found]:
    """Every form's boxes. `read(indices)` returns the recognised text of those text lines (called
    once per form with a `match`, only for lines that passed nothing else yet needing text)."""
    out = dict(base)
    texts: dict[int, str | None] = {}
    for f in order:
        src = out.get(f.source, Found())
        b, members = src.boxes, list(src.members) or [[] for _ in range(len(src.boxes))]
        keep = np.ones(len(b), bool)
        if f.aspect is not None and len(b):
            ratio = (b[:, 2] - b[:, 0]) / np.maximum(b[:, 3] - b[:, 1], 1e-6)
            keep &= (ratio >= f.aspect[0]) & (ratio <= f.aspect[1])
        if f.inside is not None and len(b):
            keep &= _inside(b, out.get(f.inside, Found()).boxes)
        if f.match is not None and keep.any():
            want = sorted({m for k in np.nonzero(keep)[0] for m in members[k]} - set(texts))
            if want:
                texts.update(read(want))
            for k in np.nonzero(keep)[0]:
                parts = [texts.get(m) for m in members[k]]
                if any(p is None for p in parts):
                    continue  # not read (yet): treated as a match — private until read otherwise
                s = " ".join(p for p in parts if p).strip()
                keep[k] = bool(s) and f.match.search(s) is not None
        b = b[keep]
        members = [m for m, k in zip(members, keep, strict=True) if k]
        if f.min_lines:
            b, members = blocks(b, members, f.min_lines)
        out[f.name] = Found(b, members)
    texts.clear()
    return out


def _inside(boxes: np.ndarray, containers: np.ndarray) -> np.ndarray:
    """Whether each box's centre lies in a container grown by INSIDE_GROW of its size (detector
    boxes of people are loose: a bib at the edge of the torso is still on the person)."""
    if not len(containers):
        return np.zeros(len(boxes), bool)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    c = containers
    gx = (c[:, 2] - c[:, 0]) * INSIDE_GROW
    gy = (c[:, 3] - c[:, 1]) * INSIDE_GROW
    return ((cx[:, None] >= c[None, :, 0] - gx) & (cx[:, None] <= c[None, :, 2] + gx)
            & (cy[:, None] >= c[None, :, 1] - gy) & (cy[:, None] <= c[None, :, 3] + gy)).any(axis=1)


def blocks(b: np.ndarray, members: list[list[int]], min_lines: int) -> tuple[np.ndarray, list[list[int]]]:
    """Group text lines into blocks (lines that overlap horizontally and are at most ~1.5 line
    heights apart vertically); blocks with ≥ min_lines distinct lines become one box each."""
    n = len(b)
    if n < min_lines:
        return np.zeros((0, 5)), []
    h = b[:, 3] - b[:, 1]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    ox = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    gap = np.maximum(b[:, None, 1], b[None, :, 1]) - np.minimum(b[:, None, 3], b[None, :, 3])
    hmax = np.maximum(h[:, None], h[None, :])
    similar = np.minimum(h[:, None], h[None, :]) * 2.5 >= hmax
    near = (ox > -hmax) & (gap <= 1.5 * hmax) & similar
    for i, j in zip(*np.nonzero(np.triu(near, 1)), strict=True):
        parent[find(int(i))] = find(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    out, mem = [], []
    for g in groups.values():
        cy = np.sort((b[g, 1] + b[g, 3]) / 2)
        lines = 1 + int(np.count_nonzero(np.diff(cy) > 0.5 * np.median(h[g])))
        if lines >= min_lines:
            out.append([b[g, 0].min(), b[g, 1].min(), b[g, 2].max(), b[g, 3].max(), b[g, 4].max()])
            mem.append(sorted(m for k in g for m in members[k]))
    return (np.array(out) if out else np.zeros((0, 5))), mem
