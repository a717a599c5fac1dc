"""`crowdcap tags check NEW.toml --sessions DIR`: the regression gate before a policy is signed.

The tagged frames are replayed (replay.py) with the new policy and with the current one (`--current
FILE`; without it, the current one is what the devices did: their manifests). The new policy is
refused when its recall on consensus-private regions is lower than the current one's, or when its
over-redaction (score.py) exceeds the bound — or the current one's, when that is already above the
bound (a policy is not refused for over-redaction it inherited and does not make worse). Both are printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uplink.backend.tags.consensus import Consensus
from uplink.backend.tags.format import TagError
from uplink.backend.tags.replay import Replayer, policy_redactions
from uplink.backend.tags.score import COVER_MIN, evaluate, observed
from uplink.backend.tags.sessions import Sessions

MAX_OVER_REDACTION = 0.05


def check(cons: Consensus, sessions: Sessions, new_policy: str | Path, *, current: str | Path | None = None,
          max_over: float = MAX_OVER_REDACTION, cover_min: float = COVER_MIN, redact_cfg: Any = None) -> dict[str, Any]:
    from redact.policy import load_policy

    if not 0 <= max_over <= 1:
        raise TagError(f"--max-over-redaction: expected 0-1, got {max_over}")
    new = load_policy(new_policy)  # PolicyError names the file and field
    cur = load_policy(current) if current else None
    keys = [k for k in cons.frames() if sessions.get(k) is not None]
    replayer = Replayer(sessions, redact_cfg)
    ev_new = evaluate(cons, sessions, policy_redactions(replayer, new, keys), cover_min=cover_min,
                      version=lambda rec: f"{new.version} (replayed)")
    if cur is not None:
        ev_cur = evaluate(cons, sessions, policy_redactions(replayer, cur, keys), cover_min=cover_min,
                          version=lambda rec: f"{cur.version} (replayed)")
        cur_name = f"{cur.version} (replayed)"
    else:
        ev_cur = evaluate(cons, sessions, observed, cover_min=cover_min, version=lambda rec: "as sent")
        cur_name = "as sent (manifests)"
    a, b = ev_cur.overall.to_dict(), ev_new.overall.to_dict()
    reasons = []
    if b["private"] == 0:
        reasons.append("no consensus-private regions on frames in the sessions: nothing to check against")
    elif (b["recall"] or 0.0) < (a["recall"] or 0.0):
        reasons.append(f"recall {b['recall']} < current {a['recall']}")
    # a policy is not refused for over-redaction it inherited and does not make worse
    allowed = max(max_over, a["over_redaction"])
    if b["over_redaction"] > allowed:
        reasons.append(f"over-redaction {b['over_redaction']} > bound {max_over}"
                       + (f" (current {a['over_redaction']})" if allowed > max_over else ""))
    per_class = {}
    for cls in sorted(set(ev_cur.by_class) | set(ev_new.by_class)):
        per_class[cls] = {"current": ev_cur.by_class[cls].to_dict(), "new": ev_new.by_class[cls].to_dict()}
    return {"ok": not reasons, "reasons": reasons, "policy": str(new_policy), "version": new.version,
            "current": cur_name, "max_over_redaction": max_over, "judged_frames": ev_new.judged_frames,
            "frames_replayed": len(keys),
            "recall": {"current": a["recall"], "new": b["recall"]},
            "over_redaction": {"current": a["over_redaction"], "new": b["over_redaction"]},
            "totals": {"current": a, "new": b}, "by_class": per_class}


def text(doc: dict[str, Any]) -> str:
    t = doc["totals"]
    lines = [f"{'':<28} {'recall':>8} {'leaks':>6} {'over-redaction':>15} {'redacted':>9}"]
    for name, key in ((doc["current"], "current"), (f"{doc['version']} (new)", "new")):
        s = t[key]
        rec = "-" if s["recall"] is None else f"{s['recall']:.3f}"
        lines.append(f"{name[:28]:<28} {rec:>8} {s['leaks']:>6} {s['over_redaction']:>15.3f} {s['redacted']:>9}")
    verdict = "PASSED" if doc["ok"] else "REFUSED: " + "; ".join(doc["reasons"])
    lines.append(f"check {verdict} (bound: over-redaction ≤ {doc['max_over_redaction']}; "
                 f"{doc['judged_frames']} judged frames, {doc['frames_replayed']} replayed per policy)")
    return "\n".join(lines)
