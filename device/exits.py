"""Honest exits for `crowdcap run`: a run that read no frame, or whose redaction withheld every frame
it read, did not do its job — it exits non-zero and says why (systemd and scripts see a failure,
not a clean 0 over an empty session)."""

from __future__ import annotations

from typing import Any

EXIT_NO_FRAMES = 4  # the source gave nothing
EXIT_ALL_WITHHELD = 5  # every frame read was withheld by redaction (no model, canary missed, ...)


def verdict(snapshot: dict[str, Any], redact_status: dict[str, Any] | None, source: str) -> tuple[int, str]:
    """(exit code, message) for a finished run's pipeline snapshot; (0, "") when it did its job."""
    read = int(snapshot.get("frames_captured", 0))
    if read == 0:
        faults = snapshot.get("source_faults") or []
        why = faults[-1].get("error", "") if faults else "the source ended before its first frame"
        return EXIT_NO_FRAMES, f"no frame could be read from {source} ({why})"
    stage = (snapshot.get("stages") or {}).get("redact")
    if stage is None or redact_status is None:
        return 0, ""
    if stage.get("frames_in", 0) > 0 and stage.get("frames_out", 0) == 0:
        reasons = dict(redact_status.get("frames_withheld") or stage.get("withheld") or {})
        detail = redact_status.get("load_error") or redact_status.get("last_fault") or ""
        text = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) or "no reason recorded"
        return EXIT_ALL_WITHHELD, (f"redaction withheld every one of the {stage['frames_in']} frames read "
                                   f"({text}){': ' + detail if detail else ''}")
    return 0, ""
