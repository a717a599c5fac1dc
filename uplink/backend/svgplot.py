"""Small inline-SVG charts for report.html: axes, "nice" ticks, UTC time labels, units, legends.

No JavaScript and no external files: a page that opens offline, anywhere. Values are escaped; NaN and
infinities are skipped, never drawn.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence

PALETTE = ("#1565c0", "#ef6c00", "#2e7d32", "#c62828", "#6a1b9a", "#00838f", "#5d4037", "#ad1457")
W, H = 620, 200
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 26, 34


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 5 × 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks, v = [], first
    while True:
        ticks.append(round(v, 12))
        if v >= hi - step * 1e-9 and len(ticks) >= 2:
            return ticks  # the last tick is at or above the highest value: nothing is drawn off the axes
        v += step


def time_ticks(t0: float, t1: float, n: int = 6) -> list[float]:
    """Tick times (UTC seconds) at round steps: 1 s ... 1 day."""
    span = max(t1 - t0, 1e-6)
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
    step = next((s for s in steps if span / s <= n), steps[-1] * math.ceil(span / (steps[-1] * n)))
    first = math.ceil(t0 / step) * step
    return [first + k * step for k in range(int((t1 - first) // step) + 1)]


def time_label(t: float, span: float) -> str:
    if not math.isfinite(t) or abs(t) > 1e11:
        return "?"
    fmt = "%H:%M:%S" if span < 86400 else "%m-%d %H:%M"
    return time.strftime(fmt, time.gmtime(t))


def fmt_num(v: float) -> str:
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.3g}G"
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def line_chart(title: str, series: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, unit: str,
               time_axis: bool = True, x_unit: str = "", kind: str = "line", y_min: float | None = 0.0) -> str:
    """An SVG chart of `series` = [(label, xs, ys)]; x is UTC seconds (time_axis) or plain numbers."""
    pts = [(label, [(x, y) for x, y in zip(xs, ys, strict=False) if _ok(x) and _ok(y)]) for label, xs, ys in series]
    pts = [(label, p) for label, p in pts if p]
    esc = html.escape
    head = f'<figure class="chart"><figcaption>{esc(title)}</figcaption>'
    if not pts:
        return head + '<p class="nodata">no data</p></figure>'
    all_x = [x for _, p in pts for x, _ in p]
    all_y = [y for _, p in pts for _, y in p]
    x0, x1 = min(all_x), max(all_x)
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    n_bars = max(len(p) for _, p in pts)
    if kind == "bar":  # room for half a bar at each end
        half = (x1 - x0) / max(1, n_bars - 1) / 2
        x0, x1 = x0 - half, x1 + half
    lo = min(all_y) if y_min is None else min(y_min, min(all_y))
    yt = nice_ticks(lo, max(all_y))
    y0, y1 = yt[0], yt[-1]
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return TOP + ph - (y - y0) / ((y1 - y0) or 1.0) * ph

    out = [f'<svg class="plot" width="{W}" height="{H}" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" '
           f'role="img" aria-label="{esc(title)}">',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fcfcfc" stroke="#bbb"/>']
    for v in yt:
        y = sy(v)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>'
                   f'<line x1="{LEFT - 4}" x2="{LEFT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#555"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{esc(fmt_num(v))}</text>')
    xt = time_ticks(x0, x1) if time_axis else nice_ticks(x0, x1, 6)
    for v in xt:
        if not x0 <= v <= x1:
            continue
        x = sx(v)
        label = time_label(v, x1 - x0) if time_axis else fmt_num(v)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + ph}" y2="{TOP + ph + 4}" stroke="#555"/>'
                   f'<text x="{x:.1f}" y="{TOP + ph + 16}" text-anchor="middle" class="tick">{esc(label)}</text>')
    xlabel = "time (UTC)" if time_axis else x_unit
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 3}" text-anchor="middle" class="axis">{esc(xlabel)}</text>'
               f'<text x="12" y="{TOP + ph / 2}" text-anchor="middle" class="axis" '
               f'transform="rotate(-90 12 {TOP + ph / 2})">{esc(unit)}</text>')
    for i, (label, p) in enumerate(pts):
        color = PALETTE[i % len(PALETTE)]
        p.sort()
        if kind == "bar":
            bw = max(1.0, pw / max(1, n_bars) * 0.8)
            for x, y in p:
                top = sy(max(y, y0))
                out.append(f'<rect x="{sx(x) - bw / 2:.1f}" y="{top:.1f}" width="{bw:.1f}" '
                           f'height="{max(0.0, sy(y0) - top):.1f}" fill="{color}"/>')
        else:
            poly = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in p)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{poly}"/>')
            if len(p) == 1:
                out.append(f'<circle cx="{sx(p[0][0]):.1f}" cy="{sy(p[0][1]):.1f}" r="3" fill="{color}"/>')
        if len(pts) > 1 or label:
            lx = LEFT + 8 + i * 130
            out.append(f'<rect x="{lx}" y="6" width="10" height="10" fill="{color}"/>'
                       f'<text x="{lx + 14}" y="15" class="tick">{esc(label)}</text>')
    out.append("</svg>")
    return head + "".join(out) + "</figure>"


def xy_chart(title: str, xs: Sequence[float], ys: Sequence[float], *, x_label: str, y_label: str,
             marks: Sequence[tuple[float, float, str]] = ()) -> str:
    """Equal-scale scatter/path (a top view): metres on both axes, start/end and keyframe marks."""
    p = [(x, y) for x, y in zip(xs, ys, strict=False) if _ok(x) and _ok(y)]
    esc = html.escape
    head = f'<figure class="chart"><figcaption>{esc(title)}</figcaption>'
    if not p:
        return head + '<p class="nodata">no poses</p></figure>'
    size = 360
    pad = 46
    xmin, xmax = min(x for x, _ in p), max(x for x, _ in p)
    ymin, ymax = min(y for _, y in p), max(y for _, y in p)
    span = max(xmax - xmin, ymax - ymin, 0.1) * 1.1
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    ticks = nice_ticks(min(cx, cy) - span, max(cx, cy) + span, 12)

    def sx(x: float) -> float:
        return pad + (x - (cx - span / 2)) / span * (size - 2 * pad)

    def sy(y: float) -> float:
        return size - pad - (y - (cy - span / 2)) / span * (size - 2 * pad)

    out = [f'<svg class="plot" width="{size}" height="{size}" viewBox="0 0 {size} {size}" '
           f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(title)}">',
           f'<rect x="{pad}" y="{pad}" width="{size - 2 * pad}" height="{size - 2 * pad}" fill="#fcfcfc" stroke="#bbb"/>']
    for v in ticks:
        x, y = sx(v), sy(v)
        if pad <= x <= size - pad:
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad}" y2="{size - pad}" stroke="#eee"/>'
                       f'<text x="{x:.1f}" y="{size - pad + 14}" text-anchor="middle" class="tick">{_m(v)}</text>')
        if pad <= y <= size - pad:
            out.append(f'<line x1="{pad}" x2="{size - pad}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                       f'<text x="{pad - 4}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_m(v)}</text>')
    out.append(f'<text x="{size / 2}" y="{size - 8}" text-anchor="middle" class="axis">{esc(x_label)}</text>'
               f'<text x="12" y="{size / 2}" text-anchor="middle" class="axis" '
               f'transform="rotate(-90 12 {size / 2})">{esc(y_label)}</text>')
    poly = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in p)
    out.append(f'<polyline fill="none" stroke="{PALETTE[0]}" stroke-width="1.5" points="{poly}"/>')
    for x, y, kind in marks:
        if _ok(x) and _ok(y):
            color = {"start": "#2e7d32", "end": "#c62828"}.get(kind, "#ef6c00")
            r = 5 if kind in ("start", "end") else 2.5
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{r}" fill="{color}"><title>{esc(kind)}</title></circle>')
    out.append("</svg>")
    return head + "".join(out) + "</figure>"


def _m(v: float) -> str:
    return f"{round(v, 6) + 0.0:.3g}"  # + 0.0: never "-0"


def _ok(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and abs(v) < 1e12
