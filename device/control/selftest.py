"""`selftest`: camera, model, broker and disk, each "pass", "fail" or "skip" with a detail.

    camera  frames arriving (skipped while paused)
    model   each configured model card finds the reference faces (`device.model_update.selftest`)
    broker  the uplink is connected (skipped without a broker)
    disk    spool and state dirs writable (fsync'd probe file) with at least 100 MiB free
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from device.control.table import Session, stage_status
from device.model_update import reference_frames
from device.model_update import selftest as model_selftest
from redact.cards import default_card_path


def selftest(service: Any, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
    checks = {"camera": check_camera(service), "model": check_model(service),
              "broker": check_broker(service), "disk": check_disk(service)}
    ok = all(c["result"] != "fail" for c in checks.values())
    text = "\n".join(f"{name:<7} {c['result']:<5} {c['detail']}" for name, c in checks.items())
    return {"passed": ok, "checks": checks}, text + f"\nselftest {'passed' if ok else 'FAILED'}"


def check_camera(service: Any) -> dict[str, str]:
    snap = service.pipeline.snapshot()
    if service.pipeline.paused:
        return {"result": "skip", "detail": "capture paused"}
    fps = snap["stages"]["capture"]["fps"]
    faults = snap.get("source_faults") or []
    if snap["frames_captured"] == 0 or (fps == 0 and faults):
        last = faults[-1]["error"] if faults else "no frames yet"
        return {"result": "fail", "detail": last}
    return {"result": "pass", "detail": f"{fps:.1f} fps, {snap['frames_captured']} frames"}


def check_model(service: Any) -> dict[str, str]:
    if service.stages.get("redact") is None:
        return {"result": "skip", "detail": "no redaction stage"}
    cfg = service.config
    if not cfg.redact.enabled:
        return {"result": "skip", "detail": "redaction disabled in config"}
    frames = reference_frames()
    details, ok = [], True
    for card in cfg.redact.models or [str(default_card_path())]:
        r = model_selftest(Path(card), cfg.redact, frames)
        ok = ok and r["ok"] and r["recall"] >= cfg.downlink.selftest_min_recall
        details.append(f"{Path(card).name}: {r['detail']}")
    return {"result": "pass" if ok else "fail", "detail": "; ".join(details)}


def check_broker(service: Any) -> dict[str, str]:
    if not service.config.uplink.broker:
        return {"result": "skip", "detail": "no broker configured"}
    st = stage_status(service.stages.get("uplink"))
    if st.get("connected"):
        return {"result": "pass", "detail": "connected"}
    return {"result": "fail", "detail": str(st.get("last_error") or "not connected")}


def check_disk(service: Any) -> dict[str, str]:
    cfg = service.config
    worst: dict[str, str] = {"result": "pass", "detail": ""}
    for d in dict.fromkeys((cfg.uplink.spool_dir, cfg.device.state_dir)):
        p = Path(d)
        try:
            p.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=p, prefix=".selftest-") as fh:
                fh.write(b"x")
                fh.flush()
                os.fsync(fh.fileno())
            free = shutil.disk_usage(p).free
        except OSError as e:
            return {"result": "fail", "detail": f"{p}: {e.strerror or e}"}
        if free < 100 * 2**20:
            return {"result": "fail", "detail": f"{p}: only {free / 2**20:.0f} MiB free"}
        worst["detail"] += f"{p}: {free / 2**30:.1f} GiB free, writable; "
    worst["detail"] = worst["detail"].rstrip("; ")
    return worst
