"""Crowd tags: one JSON object per line (docs/tags.md), validated field by field.

    {"device": "dev-1", "session": "s-3", "seq": 120, "bbox": [x1, y1, x2, y2],
     "label": "private", "class": "face", "tagger": "t-17", "time": "2026-12-03T08:00:00Z"}

`polygon` ([[x, y], ...], ≥ 3 points) may replace `bbox` (its bounding box is used for matching).
Optional: `text` (a tagger's transcription of text that was sent un-redacted), `id`, `note`. Unknown
fields are refused (a typo must not silently drop a label); `x-*` fields are ignored. A bad line is
refused with its line number and field: `read_tags` raises TagError listing the first bad lines, or,
with `skip_bad`, skips them and returns them as refusals.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from capture.configcore import InputError

LABELS = ("private", "not_private")
BUILTIN_CLASSES = ("face", "person", "plate", "text", "screen")
_IDENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CLASS = re.compile(r"^(face|person|plate|text|screen|custom:[a-z][a-z0-9_]{0,31})$")  # form names as in policies
_KNOWN = {"device", "session", "seq", "bbox", "polygon", "label", "class", "tagger", "time", "text", "id", "note"}
MAX_LINE = 64 * 1024
MAX_ERRORS_SHOWN = 20


class TagError(InputError):
    """A user-facing error of the tags tools (a tags file that cannot be used, a bad option, sessions
    that are not there); the message names the file, line, field or option."""


@dataclass(frozen=True)
class Tag:
    device: str
    session: str
    seq: int
    bbox: tuple[float, float, float, float]
    label: str
    cls: str
    tagger: str
    time: float
    polygon: tuple[tuple[float, float], ...] | None = None
    text: str | None = None
    line: int = 0

    @property
    def frame(self) -> tuple[str, str, int]:
        return self.device, self.session, self.seq


def _bad(field: str, what: str, got: Any) -> ValueError:
    shown = repr(got)
    return ValueError(f"{field}: expected {what}, got {shown[:80]}")


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def parse_tag(obj: Any, line: int = 0) -> Tag:
    """One tag from a decoded JSON value; ValueError('<field>: expected ..., got ...')."""
    if not isinstance(obj, dict):
        raise _bad("(line)", "a JSON object", obj)
    unknown = sorted(k for k in obj if k not in _KNOWN and not str(k).startswith("x-"))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field (known: {', '.join(sorted(_KNOWN))}; x-* is ignored)")
    for key in ("device", "session"):
        v = obj.get(key)
        if not isinstance(v, str) or not _IDENT.match(v) or v in (".", ".."):
            raise _bad(key, "1-64 of A-Z a-z 0-9 _ - . (a session folder name)", v)
    seq = obj.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise _bad("seq", "a frame sequence number (integer ≥ 0)", seq)
    if ("bbox" in obj) == ("polygon" in obj):
        raise ValueError("bbox: expected exactly one of bbox or polygon")
    polygon = None
    if "bbox" in obj:
        b = obj["bbox"]
        if not isinstance(b, list) or len(b) != 4 or not all(_number(v) for v in b):
            raise _bad("bbox", "[x1, y1, x2, y2] (4 finite numbers, pixels)", b)
        if b[0] < 0 or b[1] < 0 or b[2] <= b[0] or b[3] <= b[1]:
            raise _bad("bbox", "x1, y1 ≥ 0 and x2 > x1, y2 > y1", b)
        bbox = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
    else:
        p = obj["polygon"]
        if not isinstance(p, list) or not 3 <= len(p) <= 1000 or not all(
                isinstance(pt, list) and len(pt) == 2 and all(_number(v) and v >= 0 for v in pt) for pt in p):
            raise _bad("polygon", "3-1000 points [x, y] (finite numbers ≥ 0, pixels)", p)
        polygon = tuple((float(x), float(y)) for x, y in p)
        xs, ys = [q[0] for q in polygon], [q[1] for q in polygon]
        if max(xs) <= min(xs) or max(ys) <= min(ys):
            raise _bad("polygon", "a polygon with an area", p)
        bbox = (min(xs), min(ys), max(xs), max(ys))
    label = obj.get("label")
    if label not in LABELS:
        raise _bad("label", "private or not_private", label)
    cls = obj.get("class")
    if not isinstance(cls, str) or not _CLASS.match(cls):
        raise _bad("class", f"one of {', '.join(BUILTIN_CLASSES)} or custom:<name> (a-z, 0-9, _; up to 32)", cls)
    tagger = obj.get("tagger")
    if not isinstance(tagger, str) or not 1 <= len(tagger) <= 128 or not tagger.isprintable():
        raise _bad("tagger", "a tagger id (1-128 printable characters)", tagger)
    t = _time(obj.get("time"))
    text = obj.get("text")
    if text is not None and (not isinstance(text, str) or len(text) > 256):
        raise _bad("text", "the transcribed text (a string of at most 256 characters)", text)
    for key in ("id", "note"):
        if key in obj and not isinstance(obj[key], str | int):
            raise _bad(key, "a string", obj[key])
    return Tag(obj["device"], obj["session"], seq, bbox, label, cls, tagger, t, polygon, text, line)


def _time(v: Any) -> float:
    if _number(v) and v >= 0:
        return float(v)
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if dt.tzinfo is not None:
                return dt.timestamp()
    raise _bad("time", "ISO 8601 with a time zone (2026-12-03T08:00:00Z) or unix seconds", v)


def read_tags(path: str | Path, *, skip_bad: bool = False) -> tuple[list[Tag], list[str]]:
    """(tags, refusals). Without `skip_bad`, any bad line raises TagError naming line and field."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise TagError(f"{p}: cannot read tags file: {e.strerror or e}") from None
    tags: list[Tag] = []
    refused: list[str] = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            if len(raw) > MAX_LINE:
                raise ValueError(f"(line): longer than {MAX_LINE} bytes")
            try:
                obj = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"(line): not JSON ({str(e)[:60]})") from None
            tags.append(parse_tag(obj, n))
        except ValueError as e:
            refused.append(f"{p}:{n}: {e}")
    if refused and not skip_bad:
        more = f"\n... and {len(refused) - MAX_ERRORS_SHOWN} more bad lines" if len(refused) > MAX_ERRORS_SHOWN else ""
        raise TagError(f"{len(refused)} bad line(s) in the tags file (nothing used; --skip-bad skips them):\n"
                       + "\n".join(refused[:MAX_ERRORS_SHOWN]) + more)
    return tags, refused
