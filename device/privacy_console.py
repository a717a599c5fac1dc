"""Console / control-socket verbs for the wearer's own privacy (`privacy ...`,
device/control/privacy_cmd.py).

    privacy list                                  objects, volumes, zones (names, name hashes, counts)
    privacy mark-volume NAME --box W H D [--at M] a box "in front of me", M metres ahead (default 1.5)
    privacy remove NAME                           an object, volume or zone
    privacy redact-last SECONDS [--region x1,y1,x2,y2 | --all]
                                                  take back: re-redact or drop what is unsent, tell the
                                                  backend to delete / re-redact what was sent
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

VERBS = ("list", "mark-volume", "remove", "redact-last")
MARK_TIMEOUT_S = 5.0


class PrivacyCommandError(Exception):
    pass


def layer_of(service: Any) -> Any:
    return getattr(service.stages.get("redact"), "private", None)


def listing(service: Any) -> dict[str, Any]:
    from redact.private.objects import ObjectStore
    from redact.private.volumes import VolumeStore
    from redact.private.zones import ZoneStore

    state = Path(service.config.device.state_dir)
    out: dict[str, Any] = {"objects": ObjectStore(state).list(), "volumes": VolumeStore(state).list(),
                           "zones": ZoneStore(state).list()}
    layer = layer_of(service)
    if layer is not None:
        out["counts"] = layer.status()
    return out


def run(service: Any, verb: str, args: list[str]) -> tuple[dict[str, Any], str]:
    from redact.private.common import PrivateError

    try:
        if verb == "list":
            data = listing(service)
            text = "\n".join(f"{k}: " + (", ".join(f"{i['name']} ({i['name_hash']})" for i in data[k]) or "none")
                             for k in ("objects", "volumes", "zones"))
            return data, text
        if verb == "mark-volume":
            return _mark(service, args)
        if verb == "remove":
            return _remove(service, args)
        if verb == "redact-last":
            return _redact_last(service, args)
    except PrivateError as e:
        raise PrivacyCommandError(str(e)) from None
    raise PrivacyCommandError(f"usage: privacy [{'|'.join(('show', 'reload') + VERBS)}]")


def _mark(service: Any, args: list[str]) -> tuple[dict[str, Any], str]:
    usage = "usage: privacy mark-volume NAME --box W H D [--at METRES]"
    if not args or args[0].startswith("-"):
        raise PrivacyCommandError(usage)
    name, rest = args[0], args[1:]
    box: list[float] | None = None
    at = 1.5
    i = 0
    try:
        while i < len(rest):
            if rest[i] == "--box" and i + 3 < len(rest) + 0:
                box = [float(v) for v in rest[i + 1:i + 4]]
                i += 4
            elif rest[i] == "--at" and i + 1 < len(rest):
                at = float(rest[i + 1])
                i += 2
            else:
                raise PrivacyCommandError(f"{usage} (unexpected {rest[i]!r})")
    except ValueError:
        raise PrivacyCommandError(f"{usage} (W H D and METRES are numbers)") from None
    if box is None or len(box) != 3:
        raise PrivacyCommandError(usage)
    layer = layer_of(service)
    if layer is None:
        raise PrivacyCommandError("privacy mark-volume: no redaction stage with the wearer's privacy layer "
                                  "(privacy.enabled = false or redaction disabled)")
    done, result = layer.request_mark(name, box, at)
    if service.pipeline.paused or not done.wait(MARK_TIMEOUT_S):
        raise PrivacyCommandError(f"privacy mark-volume: no frame arrived within {MARK_TIMEOUT_S:.0f} s to anchor "
                                  "the volume (is capture running?); it will be anchored on the next frame")
    if "error" in result:
        raise PrivacyCommandError(result["error"])
    vol = result["volume"]
    return {"marked": vol}, f"volume {name} marked {at:g} m ahead ({vol['name_hash']}, place {vol['place']})"


def _remove(service: Any, args: list[str]) -> tuple[dict[str, Any], str]:
    from redact.private.layer import touch_changed
    from redact.private.objects import ObjectStore
    from redact.private.volumes import VolumeStore
    from redact.private.zones import ZoneStore

    if len(args) != 1:
        raise PrivacyCommandError("usage: privacy remove NAME")
    state = Path(service.config.device.state_dir)
    removed = [k for k, s in (("object", ObjectStore(state)), ("volume", VolumeStore(state)),
                              ("zone", ZoneStore(state))) if s.remove(args[0])]
    if not removed:
        raise PrivacyCommandError(f"privacy remove: no object, volume or zone named {args[0]!r}")
    touch_changed(state)
    layer = layer_of(service)
    if layer is not None:
        layer.reload()
    return {"removed": removed, "name": args[0]}, f"removed {args[0]} ({', '.join(removed)})"


def _redact_last(service: Any, args: list[str]) -> tuple[dict[str, Any], str]:
    usage = "usage: privacy redact-last SECONDS [--region x1,y1,x2,y2 | --all]"
    if not args:
        raise PrivacyCommandError(usage)
    try:
        seconds = float(args[0])
    except ValueError:
        raise PrivacyCommandError(f"{usage} (SECONDS is a number, got {args[0]!r})") from None
    if not 0 < seconds <= 86400:
        raise PrivacyCommandError(f"privacy redact-last: SECONDS expected 0-86400, got {args[0]}")
    region: list[int] | None = None
    rest = args[1:]
    if rest == ["--all"] or not rest:
        region = None
    elif len(rest) == 2 and rest[0] == "--region":
        try:
            region = [int(v) for v in rest[1].split(",")]
        except ValueError:
            region = []
        if len(region) != 4 or region[0] >= region[2] or region[1] >= region[3] or min(region) < 0:
            raise PrivacyCommandError(f"--region: expected x1,y1,x2,y2 with x1 < x2, y1 < y2 (pixels), "
                                      f"got {rest[1]!r}")
    else:
        raise PrivacyCommandError(usage)
    uplink = service.stages.get("uplink")
    take_back = getattr(uplink, "take_back", None)
    if take_back is None:
        raise PrivacyCommandError("privacy redact-last: no uplink stage in this pipeline")
    result = take_back(seconds, region)
    what = "region re-redacted" if region else "dropped"
    return {"taken_back": result}, (f"take-back of the last {seconds:g} s: {result['spool_rewritten']} unsent frame(s) "
                                    f"{what}, {result['spool_dropped']} record(s) dropped; the backend is told to "
                                    f"{'re-redact' if region else 'delete'} what it already has")
