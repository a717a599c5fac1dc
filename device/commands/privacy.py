"""`crowdcap privacy ...`: the wearer's own private objects, volumes and zones (kept in the state folder).

    crowdcap privacy add-object NAME IMAGE... [--applies-to both]     photos of a thing to redact wherever seen
    crowdcap privacy add-volume SESSION --name NAME --centre X Y Z --box W H D [--yaw DEG]
                                                                      a box in a recorded session's coordinates
    crowdcap privacy add-zone NAME (--circle LAT LON RADIUS_M | --polygon LAT,LON ... | --wifi SSID_OR_BSSID)
                                   [--time HH:MM-HH:MM] [--action pause|withhold]
    crowdcap privacy [list] | remove NAME

Like `run`, it takes --config FILE and --state-dir DIR (the device's state folder). A running
service picks changes up within a second. `privacy redact-last` and `mark-volume` need the running
service: use the console or `crowdcap ctl privacy ...`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from device.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("privacy", help="the wearer's private objects, volumes and zones", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="config TOML (default: built-in defaults)")
    p.add_argument("--state-dir", default=None, help="state folder (overrides device.state_dir)")
    p.add_argument("--json", action="store_true", help="print JSON")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    a = verbs.add_parser("add-object", help="register a private object from photos of it")
    a.add_argument("name")
    a.add_argument("images", nargs="+", metavar="IMAGE")
    a.add_argument("--applies-to", default="both", choices=["color", "depth", "both"])
    v = verbs.add_parser("add-volume", help="a private box in a recorded session's coordinates")
    v.add_argument("session", metavar="SESSION", help="a recorded session folder (TUM layout: crowdcap record, "
                   "or an ingest session)")
    v.add_argument("--name", required=True)
    v.add_argument("--centre", "--center", nargs=3, type=float, required=True, metavar=("X", "Y", "Z"))
    v.add_argument("--box", nargs=3, type=float, required=True, metavar=("W", "H", "D"))
    v.add_argument("--yaw", type=float, default=0.0, help="turn about the vertical (y) axis, degrees")
    v.add_argument("--applies-to", default="both", choices=["color", "depth", "both"])
    z = verbs.add_parser("add-zone", help="a private place: GPS circle/polygon, Wi-Fi network, time window")
    z.add_argument("name")
    z.add_argument("--circle", nargs=3, type=float, metavar=("LAT", "LON", "RADIUS_M"))
    z.add_argument("--polygon", nargs="+", metavar="LAT,LON")
    z.add_argument("--wifi", action="append", default=[], metavar="SSID_OR_BSSID")
    z.add_argument("--time", default="", metavar="HH:MM-HH:MM", help="only during this daily window (local time)")
    z.add_argument("--action", default="pause", help="pause (camera not read) | withhold (frames dropped)")
    verbs.add_parser("list", help="objects, volumes and zones")
    r = verbs.add_parser("remove", help="remove an object, volume or zone by name")
    r.add_argument("name")
    p.set_defaults(func=run)


def state_dir_of(args: argparse.Namespace) -> Path:
    from device import config as config_mod

    cfg = config_mod.override(config_mod.load(args.config), **{"device.state_dir": args.state_dir})
    return Path(cfg.device.state_dir)


def listing(state_dir: Path) -> dict[str, Any]:
    from redact.private.objects import ObjectStore
    from redact.private.volumes import VolumeStore
    from redact.private.zones import ZoneStore

    return {"objects": ObjectStore(state_dir).list(), "volumes": VolumeStore(state_dir).list(),
            "zones": ZoneStore(state_dir).list()}


def run(args: argparse.Namespace) -> int:
    from redact.private.common import PrivateError
    from redact.private.layer import touch_changed

    state = state_dir_of(args)
    try:
        result = _run(args, state)
    except PrivateError as e:
        raise CliError(str(e)) from None
    if args.verb not in (None, "list"):
        touch_changed(state)
    if args.json:
        print(json.dumps(result))
    else:
        print(_text(result))
    return 0


def _run(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    from redact.private.objects import ObjectStore
    from redact.private.volumes import VolumeStore
    from redact.private.zones import ZoneStore, parse_zone

    verb = args.verb or "list"
    if verb == "list":
        return listing(state)
    if verb == "add-object":
        obj = ObjectStore(state).add(args.name, [Path(p) for p in args.images], args.applies_to)
        return {"added": "object", "name": obj.name, "name_hash": obj.name_hash, "images": len(obj.images)}
    if verb == "add-volume":
        return _add_volume(args, state)
    if verb == "add-zone":
        zone = parse_zone(args.name, circle=args.circle, polygon=args.polygon, wifi=args.wifi, time=args.time,
                          action=args.action)
        ZoneStore(state).add(zone)
        return {"added": "zone", "name": zone.name, "name_hash": zone.name_hash, "kind": zone.kind}
    if verb == "remove":
        removed = [kind for kind, store in (("object", ObjectStore(state)), ("volume", VolumeStore(state)),
                                            ("zone", ZoneStore(state))) if store.remove(args.name)]
        if not removed:
            raise CliError(f"privacy remove: no object, volume or zone named {args.name!r} in {state}")
        return {"removed": removed, "name": args.name}
    raise CliError(f"privacy: unknown verb {verb!r}")


def _add_volume(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    import numpy as np

    from capture.replay import ReplaySource
    from capture.tum import LayoutError
    from redact.private.common import check_name
    from redact.private.places import place_from_session, places_dir
    from redact.private.volumes import Volume, VolumeStore, check_box

    check_name(args.name, "volume")
    size = check_box(args.box)
    centre = np.array(args.centre, float)
    if not np.all(np.isfinite(centre)):
        raise CliError(f"--centre: expected three finite numbers, got {args.centre}")
    if any(v["name"] == args.name for v in VolumeStore(state).list()):
        raise CliError(f"volume {args.name}: already exists (privacy remove {args.name} first)")
    try:
        src = ReplaySource(Path(args.session), pace="fast")
    except LayoutError as e:
        raise CliError(str(e)) from None
    src.open()
    frames = iter(src.read, None)
    place, n = place_from_session(frames)
    src.close()
    if len(place.keyframes) == 0:
        raise CliError(f"{args.session}: no usable frames ({n} read): need colour + depth with texture to "
                       "anchor the volume")
    place.save(places_dir(state))
    yaw = np.deg2rad(args.yaw)
    rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    vol = Volume(args.name, place.id, centre, rot, size, args.applies_to)
    VolumeStore(state).add(vol)
    return {"added": "volume", "name": vol.name, "name_hash": vol.name_hash, "place": place.id,
            "keyframes": len(place.keyframes), "frames_read": n}


def _text(result: dict[str, Any]) -> str:
    if "objects" in result:
        lines = []
        for kind in ("objects", "volumes", "zones"):
            items = result[kind]
            lines.append(f"{kind}: {len(items)}")
            lines += [f"  {it['name']}  ({', '.join(f'{k}={v}' for k, v in it.items() if k != 'name')})"
                      for it in items]
        return "\n".join(lines)
    return "  ".join(f"{k}={v}" for k, v in result.items())
