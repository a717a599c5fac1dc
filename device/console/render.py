"""Human text for command replies: the status summary (also sd_notify's STATUS=) and flat key: value lines."""

from __future__ import annotations

from typing import Any


def status_text(status: dict[str, Any]) -> str:
    """Human summary of `Service.status()` for the console."""
    lines = [summary_line(status)]
    for name, st in (status.get("stages") or {}).items():
        if isinstance(st, dict):
            extra = "".join(f"  {k} " + ", ".join(f"{r.replace('_', ' ')} {n}" for r, n in dict(st[k]).items())
                            for k in ("withheld", "errors") if st.get(k))
            lines.append(f"  {name:<10} {st.get('fps', 0):6.1f} fps  p99 {st.get('latency_ms_p99', 0):7.1f} ms"
                         f"  in {st.get('frames_in', 0)}  out {st.get('frames_out', 0)}"
                         f"  q {st.get('queue_depth', 0)}{extra}")
    if isinstance(status.get("health"), dict):
        lines.append(f"  health     {health_text(status['health'])}")
    for section, d in (status.get("details") or {}).items():
        if isinstance(d, dict) and d:
            line = f"  {section:<10} " + ", ".join(f"{k}={v}" for k, v in flatten(d).items() if v not in ("", None, {}))
            lines.append(line if len(line) <= 240 else line[:239] + "…")  # `status --json` has everything
    return "\n".join(lines)


def health_text(h: dict[str, Any]) -> str:
    parts = []
    if h.get("temperature_c") is not None:
        parts.append(f"{h['temperature_c']:.0f}°C")
    cpu = h.get("cpu") or {}
    if cpu:
        pct = f"{cpu['percent']:.0f}% " if cpu.get("percent") is not None else ""
        parts.append(f"cpu {pct}(load {cpu.get('load1', 0):.1f}/{cpu.get('cores', 1)})")
    mem = h.get("memory") or {}
    if mem.get("available_mb"):
        parts.append(f"mem {mem['available_mb']:.0f} MiB free, rss {mem.get('rss_mb') or 0:.0f} MiB")
    free = [d["free_mb"] for d in (h.get("disk") or {}).values() if isinstance(d, dict) and "free_mb" in d]
    if free:
        parts.append(f"disk {min(free) / 1024:.1f} GiB free")
    if h.get("uptime_s"):
        parts.append(f"up {h['uptime_s'] / 3600:.1f} h")
    thermal = h.get("thermal") or {}
    if thermal:
        parts.append(f"thermal {thermal.get('state')}" + (f" ({thermal['reason']})" if thermal.get("rate_limit_fps") else ""))
    if (h.get("throttled") or {}).get("under_voltage"):
        parts.append("UNDER-VOLTAGE")
    return ", ".join(parts)


def summary_line(status: dict[str, Any]) -> str:
    """One line for sd_notify STATUS= and the console: state, fps, drops, spool, broker, temperature."""
    if not status.get("running", True):
        state = "stopped"
    elif status.get("paused"):
        state = "paused"
    else:
        state = "running"
    stages = status.get("stages") or {}
    fps = [st.get("fps", 0.0) for st in stages.values() if isinstance(st, dict)]
    parts = [state, f"{min(fps) if fps else 0.0:.1f} fps", f"drops {status.get('frames_dropped', 0)}"]
    uplink = status.get("uplink") or (status.get("details") or {}).get("uplink") or {}
    spool = status.get("spool") or uplink.get("spool") or {}
    if spool:
        parts.append(f"spool {spool.get('records', spool.get('messages', '?'))} msgs "
                     f"{spool.get('bytes', 0) / 2**20:.1f} MiB")
    if uplink:
        if not uplink.get("broker", True):
            parts.append("no broker (spool only)")
        else:
            parts.append("broker up" if uplink.get("connected") else "broker down")
            if uplink.get("records_unconfirmed"):
                parts.append(f"unconfirmed {uplink['records_unconfirmed']} "
                             f"(oldest {uplink.get('oldest_unconfirmed_age_s') or 0:.0f} s)")
            if uplink.get("last_error") and not uplink.get("connected"):
                parts.append(f"link: {str(uplink['last_error'])[:80]}")
    health = status.get("health") or {}
    if health.get("temperature_c") is not None:
        parts.append(f"{health['temperature_c']:.0f}°C")
    thermal = health.get("thermal") or {}
    if thermal.get("rate_limit_fps"):
        parts.append(f"HOT: capture capped at {thermal['rate_limit_fps']:.0f} fps")
    if status.get("stalled_stage"):
        parts.append(f"STALLED: {status['stalled_stage']}")
    return ", ".join(parts)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def text_of(d: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in flatten(d).items())
