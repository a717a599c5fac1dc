"""report.html for a session folder: self-contained (inline SVG and base64 images), opens offline.

Counts; a per-second timeline of frame rate, latency, drops (sequence gaps) and bytes; a strip of
redacted thumbnails with their manifest regions outlined and the depth colour-mapped beside them.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

THUMBS = 8
THUMB_W = 200
MAX_BINS = 600  # timeline bins: one per second, wider for long sessions (or a device clock that jumped)


def _svg_series(title: str, xs: list[float], ys: list[float], color: str, unit: str) -> str:
    w, h, pad = 720, 110, 30
    if not xs:
        return f"<p>{html.escape(title)}: no data</p>"
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    top = max(max(ys), 1e-9)
    pts = " ".join(f"{pad + (x - x0) / (x1 - x0) * (w - 2 * pad):.1f},{h - pad / 2 - y / top * (h - pad):.1f}"
                   for x, y in zip(xs, ys, strict=True))
    return (f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" role="img">'
            f'<rect width="{w}" height="{h}" fill="#fafafa" stroke="#ddd"/>'
            f'<text x="{pad}" y="14" font-size="12">{html.escape(title)} (max {top:.3g} {unit})</text>'
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/></svg>')


def _timeline(frames: list[dict]) -> str:
    if not frames:
        return "<p>no frames</p>"
    t0 = min(f["t"] for f in frames)
    span = max(f["t"] for f in frames) - t0
    # A Pi without a clock starts in 1970 until NTP: a span of decades must not become an array of
    # 10^9 seconds (it killed the ingest). Bins widen so there are at most MAX_BINS of them.
    width = max(1.0, span / MAX_BINS)
    bins = int(span / width) + 1
    fps, lat, nbytes, drops = np.zeros(bins), np.zeros(bins), np.zeros(bins), np.zeros(bins)
    prev = None
    for f in sorted(frames, key=lambda f: f["seq"]):
        i = min(bins - 1, max(0, int((f["t"] - t0) / width)))
        fps[i] += 1
        lat[i] += f.get("latency_s", 0.0)
        nbytes[i] += f.get("bytes", 0)
        if prev is not None and f["seq"] > prev + 1:
            drops[i] += f["seq"] - prev - 1
        prev = f["seq"]
    lat = np.divide(lat, fps, out=np.zeros_like(lat), where=fps > 0) * 1000
    fps, nbytes = fps / width, nbytes / width
    xs = [k * width for k in range(bins)]
    return "".join([
        _svg_series("frames per second", xs, fps.tolist(), "#1565c0", "fps"),
        _svg_series("capture → ingest latency", xs, lat.tolist(), "#ef6c00", "ms"),
        _svg_series("dropped frames (sequence gaps)", xs, drops.tolist(), "#c62828", "frames"),
        _svg_series("bytes received", xs, nbytes.tolist(), "#2e7d32", "B/s"),
    ])


def _b64(img: np.ndarray, ext: str = ".jpg") -> str:
    ok, buf = cv2.imencode(ext, img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return base64.b64encode(buf.tobytes()).decode() if ok else ""


def _thumbs(root: Path, frames: list[dict]) -> str:
    if not frames:
        return ""
    pick = [frames[i] for i in np.linspace(0, len(frames) - 1, min(THUMBS, len(frames))).astype(int)]
    cells = []
    for f in pick:
        color = cv2.imread(str(root / f["rgb"]), cv2.IMREAD_COLOR)
        depth = cv2.imread(str(root / f["depth"]), cv2.IMREAD_UNCHANGED)
        if color is None or depth is None:
            continue
        s = THUMB_W / color.shape[1]
        small = cv2.resize(color, (THUMB_W, round(color.shape[0] * s)), interpolation=cv2.INTER_AREA)
        regions = _regions(f)
        for r in regions:
            box = r.get("bbox") or r.get("box")
            if isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box):
                x1, y1, x2, y2 = (int(round(float(v) * s)) for v in box)
                cv2.rectangle(small, (x1, y1), (x2, y2), (0, 0, 255), 1)
        valid = depth[depth > 0]
        hi = float(np.percentile(valid, 98)) if valid.size else 1.0
        d8 = np.clip(depth.astype(np.float32) * (255.0 / max(hi, 1.0)), 0, 255).astype(np.uint8)
        dcol = cv2.applyColorMap(cv2.resize(d8, small.shape[1::-1], interpolation=cv2.INTER_NEAREST),
                                 cv2.COLORMAP_TURBO)
        dcol[cv2.resize(depth, small.shape[1::-1], interpolation=cv2.INTER_NEAREST) == 0] = 0
        cells.append(f'<figure><img src="data:image/jpeg;base64,{_b64(small)}"/>'
                     f'<img src="data:image/jpeg;base64,{_b64(dcol)}"/>'
                     f'<figcaption>seq {f["seq"]} · {len(regions)} regions</figcaption></figure>')
    return "".join(cells)


def _regions(frame: dict) -> list[dict]:
    """The manifest's regions that are JSON objects (the manifest is the device's free-form JSON)."""
    manifest = frame.get("manifest")
    regions = manifest.get("regions") if isinstance(manifest, dict) else None
    return [r for r in regions if isinstance(r, dict)] if isinstance(regions, list) else []


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and abs(v) < 1e9


def summary(frames: list[dict]) -> dict:
    seqs = sorted(f["seq"] for f in frames)
    lat = np.array([f.get("latency_s", 0.0) for f in frames]) * 1000 if frames else np.zeros(0)
    gaps = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
    return {
        "frames": len(frames), "first_seq": seqs[0] if seqs else None, "last_seq": seqs[-1] if seqs else None,
        "missing_in_range": gaps, "keyframes": sum(1 for f in frames if f.get("keyframe")),
        "historical": sum(1 for f in frames if f.get("historical")),
        "degraded": sum(1 for f in frames if f.get("degraded")),
        "bytes": int(sum(f.get("bytes", 0) for f in frames)),
        "regions": sum(len(_regions(f)) for f in frames),
        "regions_by_class": dict(sorted(Counter(str(r.get("class")) for f in frames for r in _regions(f)).items())),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
        "duration_s": round(frames[-1]["t"] - frames[0]["t"], 3) if frames else 0.0,
    }


def write_report(root: Path, frames: list[dict]) -> Path:
    s = summary(frames)
    s["clouds"] = len(list((root / "clouds").glob("*.ply")))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in s.items())
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>crowdcap session {html.escape(root.name)}</title>
<style>body{{font-family:sans-serif;margin:1.5em;color:#222}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ddd;padding:2px 8px;text-align:left}}figure{{display:inline-block;margin:4px}}
figcaption{{font-size:11px}}img{{display:block;margin-bottom:2px}}</style></head><body>
<h1>Session {html.escape(root.parent.name)} / {html.escape(root.name)}</h1>
<table>{rows}</table><h2>Timeline</h2>{_timeline(frames)}
<h2>Redacted frames (regions outlined) and depth</h2>{_thumbs(root, frames)}
<script type="application/json" id="summary">{json.dumps(s)}</script></body></html>"""
    path = root / "report.html"
    tmp = root / f".report.{os.getpid()}.tmp"
    tmp.write_text(doc)
    os.replace(tmp, path)
    return path
