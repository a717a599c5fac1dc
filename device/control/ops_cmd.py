"""`spool`, `net` and `log`: the store-and-forward spool, the broker link and the recent log lines.

    spool [stats]    the uplink's spool counters (no login)        spool flush   ask the sender to flush
    net              broker, link state, wireless links (no login)
    log tail [N]     the last N (1-1000, default 20) lines of the service's in-memory log ring
"""

from __future__ import annotations

from typing import Any

from device.console.render import text_of
from device.control.table import CommandError, Session, stage_status
from device.health import wireless_links


def spool(service: Any, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
    verb = args[0].lower() if args else "stats"
    uplink = service.stages.get("uplink")
    if uplink is None:
        raise CommandError("spool: no uplink stage in this pipeline")
    if verb == "stats":
        st = stage_status(uplink)
        counters = st.get("spool", st)
        return {"spool": counters}, text_of(counters)
    if verb == "flush":
        flush = getattr(uplink, "flush", None)
        if flush is None:
            raise CommandError("spool flush: not supported by this uplink")
        result = flush()
        return {"flushed": True, "result": result}, f"spool flush requested: {result}"
    raise CommandError("usage: spool [stats|flush]")


def net(service: Any, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
    uplink = service.stages.get("uplink")
    data: dict[str, Any] = {"broker": service.config.uplink.broker or "(none: spool only)"}
    if uplink is not None:
        st = stage_status(uplink)
        data["link"] = {k: v for k, v in st.items() if k != "spool"}
    data["wireless"] = wireless_links()
    return data, text_of(data)


def log(service: Any, args: list[str], session: Session) -> tuple[dict[str, Any], str]:
    if args and args[0].lower() == "tail":
        args = args[1:]
    try:
        n = int(args[0]) if args else 20
    except ValueError:
        raise CommandError(f"log tail: expected a number of lines, got {args[0]!r}") from None
    if not 1 <= n <= 1000:
        raise CommandError(f"log tail: expected 1-1000 lines, got {n}")
    ring = list(getattr(service, "log_ring", ()))
    lines = ring[-n:]
    return {"lines": lines}, "\n".join(lines) or "(no log lines)"
