"""tags.html: the score's numbers and example crops — of already-sent, non-redacted pixels only.

Every crop is cut from the JPEG the device sent, and every pixel inside any colour-redacted box of that
frame's manifest is painted solid grey before cutting, so a crop never shows what was under a redaction
(the redaction's blur would still hint at it). An obscured frame gives no crops.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from uplink.backend.tags.sessions import Sessions

MAX_CROPS = 12
CROP_SIDE = 160


def safe_crop(sessions: Sessions, key: tuple[str, str, int], bbox: list[float], context: float = 0.5) -> str | None:
    """A data: URI of the crop around `bbox` (+context), redacted areas painted over; None if unavailable."""
    rec = sessions.get(key)
    if rec is None or rec.obscured:
        return None
    img = rec.image()
    if img is None:
        return None
    h, w = img.shape[:2]
    for b in rec.color_boxes():
        x1, y1 = max(0, int(np.floor(b[0]))), max(0, int(np.floor(b[1])))
        img[y1:max(y1, int(np.ceil(b[3]))), x1:max(x1, int(np.ceil(b[2])))] = (128, 128, 128)
    bw, bh = bbox[2] - bbox[0], bbox[3] - bbox[1]
    x1, y1 = max(0, int(bbox[0] - context * bw)), max(0, int(bbox[1] - context * bh))
    x2, y2 = min(w, int(bbox[2] + context * bw) + 1), min(h, int(bbox[3] + context * bh) + 1)
    if x2 <= x1 or y2 <= y1:
        return None
    crop = np.ascontiguousarray(img[y1:y2, x1:x2])
    cv2.rectangle(crop, (int(bbox[0]) - x1, int(bbox[1]) - y1), (int(bbox[2]) - x1, int(bbox[3]) - y1), (0, 0, 255), 1)
    s = CROP_SIDE / max(crop.shape[:2])
    crop = cv2.resize(crop, (max(1, int(crop.shape[1] * s)), max(1, int(crop.shape[0] * s))),
                      interpolation=cv2.INTER_NEAREST)
    ok, jpg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(jpg.tobytes()).decode() if ok else None


def _stats_table(doc: dict[str, Any]) -> str:
    cols = ("private", "leaks", "recall", "redacted", "over_redacted", "precision")
    head = "".join(f"<th>{c}</th>" for c in ("version", "class", *cols))
    rows = []
    for ver, d in doc["by_version"].items():
        for cls, s in [("(all)", d["overall"]), *d["by_class"].items()]:
            cells = "".join(f"<td>{'-' if s[c] is None else s[c]}</td>" for c in cols)
            rows.append(f"<tr><td>{html.escape(ver)}</td><td>{html.escape(cls)}</td>{cells}</tr>")
    s = doc["overall"]
    rows.append("<tr class=all><td>all versions</td><td>(all)</td>"
                + "".join(f"<td>{'-' if s[c] is None else s[c]}</td>" for c in cols) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _gallery(title: str, items: list[dict[str, Any]], sessions: Sessions, caption: Any) -> str:
    cells = []
    for it in items:
        if len(cells) >= MAX_CROPS:
            break
        uri = safe_crop(sessions, (it["device"], it["session"], it["seq"]), it["bbox"])
        if uri:
            cells.append(f'<figure><img src="{uri}" alt="crop"><figcaption>{html.escape(caption(it))}</figcaption></figure>')
    body = "".join(cells) or "<p>none</p>"
    return f"<h2>{html.escape(title)} ({len(items)})</h2><div class=g>{body}</div>"


def write_page(path: str | Path, doc: dict[str, Any], sessions: Sessions) -> Path:
    p = Path(path)
    taggers = "".join(f"<tr><td>{html.escape(n)}</td><td>{t['votes']}</td><td>{t['agreed']}</td>"
                      f"<td>{'-' if t['agreement'] is None else t['agreement']}</td></tr>"
                      for n, t in doc["taggers"].items())
    c = doc["consensus"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>crowd tags</title><style>
body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
td:first-child,td:nth-child(2){{text-align:left}} tr.all{{font-weight:bold}} .g{{display:flex;flex-wrap:wrap;gap:8px}}
figure{{margin:0;font-size:11px;max-width:170px}}</style></head><body>
<h1>Crowd tags against the devices' redactions</h1>
<p>{c['decided']} decided regions ({c['private']} private, {c['not_private']} not private), {c['undecided']} undecided,
on {doc['judged_frames']} judged frames; majority of at least {c['min_taggers']} taggers with agreement ≥ {c['min_agreement']}.
A private region is covered when ≥ {doc['cover_min']} of it was redacted. Crops show only pixels that were sent
un-redacted: redacted areas are painted grey.</p>
{_stats_table(doc)}
<h2>Taggers</h2><table><tr><th>tagger</th><th>votes</th><th>agreed</th><th>agreement</th></tr>{taggers}</table>
{_gallery("Leaks: tagged private, sent in clear", doc["leaks"], sessions,
          lambda it: f"{it['class']} {it['device']}/{it['session']}#{it['seq']} cov {it['coverage']} ({it['version']})")}
{_gallery("Over-redaction: redacted, not private (context only)", doc["over_redactions"], sessions,
          lambda it: f"{it['class']} score {it['score']} {it['device']}/{it['session']}#{it['seq']}")}
</body></html>"""
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, p)
    return p
