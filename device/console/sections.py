"""`Status N` sections (Tasmota's convention: `status` alone is the summary, `status 0` everything,
`status N` one named part), each a JSON object under its own key plus a short text rendering.

    1 device    ids, session, source, started, uptime     5 network   broker, link, wireless
    2 firmware  software, python, models, policy           6 spool     records, bytes, oldest
    3 pipeline  per-stage fps, latency, queues, drops      7 time      UTC, monotonic, uptime
    4 health    temperature, CPU, memory, disk, thermal    8 redaction coverage, regions, withheld by reason
"""

from __future__ import annotations

import platform
import time
from typing import Any

from device.console.render import flatten, health_text
from device.progress import words
from device.version import package_version

SECTIONS = {1: "device", 2: "firmware", 3: "pipeline", 4: "health", 5: "network", 6: "spool", 7: "time",
            8: "redaction"}


def _device(status: dict[str, Any], ctl: Any) -> dict[str, Any]:
    started = status.get("started_at")
    return {"device_id": status.get("device_id"), "session_id": status.get("session_id"),
            "source": status.get("source"), "running": status.get("running", True),
            "paused": bool(status.get("paused")),
            "uptime_s": round(time.time() - started, 1) if isinstance(started, int | float) and started > 1e9 else None}


def _firmware(status: dict[str, Any], ctl: Any) -> dict[str, Any]:
    red = (status.get("details") or {}).get("redact") or {}
    models = red.get("models") or ([red["model"]] if "model" in red else [])
    return {"version": package_version(), "python": platform.python_version(),
            "models": [m if isinstance(m, dict) else {"name": str(m)} for m in models],
            "policy_version": red.get("policy_version")}


def _pipeline(status: dict[str, Any], ctl: Any) -> dict[str, Any]:
    stages = {name: {k: st.get(k) for k in ("fps", "frames_in", "frames_out", "latency_ms_p50", "latency_ms_p99",
                                              "queue_depth") if k in st}
              for name, st in (status.get("stages") or {}).items() if isinstance(st, dict)}
    return {"stages": stages, "frames_captured": status.get("frames_captured"),
            "frames_dropped_before_redaction": status.get("frames_dropped"),
            "stalled_stage": status.get("stalled_stage")}


def _health(status: dict[str, Any], ctl: Any) -> dict[str, Any]:
    return dict(status.get("health") or {})


def _network(status: dict[str, Any], ctl: Any) -> dict[str, Any]:
    up = (status.get("details") or {}).get("uplink") or {}
    return {"broker": ctl.service.config.uplink.broker or None,
            "link": {k: v for k, v in up.items() if k != "spool"}}


def _spool(status: dict[str, Any], ctl: Any) -> dict[str, Any]:
    up = (status.get("details") or {}).get("uplink") or {}
    return dict(up.get("spool") or status.get("spool") or {})


def _time(status: dict[str, Any], ctl: Any) -> dict[str, Any]:
    now = time.time()
    return {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "unix": round(now, 3),
            "monotonic_s": round(time.monotonic(), 3)}


def _redaction(status: dict[str, Any], ctl: Any) -> dict[str, Any]:
    red = (status.get("details") or {}).get("redact") or {}
    stage = (status.get("stages") or {}).get("redact") or {}
    return {"enabled": ctl.service.config.redact.enabled,
            "withheld_by_reason": dict(stage.get("withheld") or {}),
            **{k: v for k, v in red.items() if k not in ("models", "model")}}


_BUILD = {1: _device, 2: _firmware, 3: _pipeline, 4: _health, 5: _network, 6: _spool, 7: _time, 8: _redaction}


def section(n: int, status: dict[str, Any], ctl: Any) -> tuple[dict[str, Any], str]:
    """(data, text) for `status N`; 0 = every section."""
    wanted = list(SECTIONS) if n == 0 else [n]
    data: dict[str, Any] = {"status": n}
    lines = []
    for k in wanted:
        name = SECTIONS[k]
        body = _BUILD[k](status, ctl)
        data[name] = body
        if name == "health" and body:
            lines.append(f"{name}: {health_text(body)}")
        else:
            flat = {key: v for key, v in flatten(body).items() if v not in (None, "", {}, [])}
            lines.append(f"{name}: " + (", ".join(f"{key} {words(v)}" for key, v in flat.items()) or "none"))
    return data, "\n".join(lines)
