"""Private places: zones the wearer defines, and whether the device is inside one right now.

    zone = parse_zone("home", circle=(52.52, 13.40, 80), action="pause")   # or polygon=, wifi=, time=
    ZoneStore(state_dir).add(zone)                                         # state_dir/private/zones.json
    inside = zone.inside(Context(fix=(lat, lon) | None, wifi={"home", "aa:bb:..."}, now=datetime))

A zone is a GPS circle or polygon, a set of Wi-Fi networks (SSID or BSSID seen), and/or a daily time
window; with several, all must hold (home Wi-Fi *and* 22:00-07:00). `inside` returns None when it
cannot tell (a GPS zone without a fix): the caller fails closed to the stricter side when configured
(`privacy.zone_no_fix = "strict"`). Actions: `pause` (the camera is not read; the session marks a
gap) or `withhold` (frames are read and dropped by the redaction stage, counted). Status and telemetry
carry each zone's name hash and counts, never its coordinates or networks.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from redact.private.common import PrivateError, atomic_json, check_name, name_hash, private_dir, read_json

ACTIONS = ("pause", "withhold")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
EARTH_R = 6371008.8


@dataclass
class Context:
    fix: tuple[float, float] | None = None
    wifi: set[str] = field(default_factory=set)  # SSIDs and BSSIDs seen (BSSIDs lower case)
    now: datetime | None = None


@dataclass
class Zone:
    name: str
    action: str = "pause"
    circle: tuple[float, float, float] | None = None  # lat, lon, radius m
    polygon: list[tuple[float, float]] | None = None  # lat, lon
    wifi: list[str] = field(default_factory=list)
    time: str = ""  # HH:MM-HH:MM local

    @property
    def name_hash(self) -> str:
        return name_hash(self.name)

    @property
    def kind(self) -> str:
        return "+".join(k for k, v in (("circle", self.circle), ("polygon", self.polygon), ("wifi", self.wifi),
                                        ("time", self.time)) if v)

    @property
    def uses_gps(self) -> bool:
        return self.circle is not None or bool(self.polygon)

    def inside(self, ctx: Context) -> bool | None:
        """True/False, or None when a GPS zone has no fix to decide on."""
        if self.time and not in_window(self.time, ctx.now or datetime.now()):
            return False
        if self.wifi and not any(w in ctx.wifi or w.lower() in ctx.wifi for w in self.wifi):
            return False
        if self.uses_gps:
            if ctx.fix is None:
                return None
            lat, lon = ctx.fix
            if self.circle is not None:
                return haversine_m(lat, lon, self.circle[0], self.circle[1]) <= self.circle[2]
            assert self.polygon is not None
            return point_in_polygon(lat, lon, self.polygon)
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "circle": list(self.circle) if self.circle else None,
                "polygon": [list(p) for p in self.polygon] if self.polygon else None, "wifi": self.wifi,
                "time": self.time}


def in_window(window: str, now: datetime) -> bool:
    m = _TIME.match(window)
    assert m is not None
    start = int(m.group(1)) * 60 + int(m.group(2))
    end = int(m.group(3)) * 60 + int(m.group(4))
    t = now.hour * 60 + now.minute
    return start <= t < end if start <= end else (t >= start or t < end)  # across midnight


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_R * math.asin(min(1.0, math.sqrt(a)))


def point_in_polygon(lat: float, lon: float, poly: list[tuple[float, float]]) -> bool:
    """Ray casting in lat/lon (zones are small: the plane approximation holds)."""
    inside = False
    j = len(poly) - 1
    for i in range(len(poly)):
        (yi, xi), (yj, xj) = poly[i], poly[j]
        if (yi > lat) != (yj > lat) and lon < (xj - xi) * (lat - yi) / ((yj - yi) or 1e-300) + xi:
            inside = not inside
        j = i
    return inside


def parse_zone(name: str, *, circle: Any = None, polygon: Any = None, wifi: Any = None, time: str = "",
               action: str = "pause") -> Zone:
    """A zone from command-line/console values; PrivateError names the bad one."""
    check_name(name, "zone")
    if action not in ACTIONS:
        raise PrivateError(f"--action: expected one of {', '.join(ACTIONS)}, got {action!r}")
    if circle is not None and polygon:
        raise PrivateError("zone: give --circle or --polygon, not both")
    circ = None
    if circle is not None:
        lat, lon, r = (float(v) for v in circle)
        _latlon(lat, lon, "--circle")
        if not 1 <= r <= 100000 or not math.isfinite(r):
            raise PrivateError(f"--circle: radius expected 1-100000 m, got {r}")
        circ = (lat, lon, r)
    poly = None
    if polygon:
        poly = []
        for p in polygon:
            try:
                lat, lon = (float(v) for v in (p.split(",") if isinstance(p, str) else p))
            except ValueError:
                raise PrivateError(f"--polygon: expected LAT,LON points, got {p!r}") from None
            poly.append(_latlon(lat, lon, "--polygon"))
        if len(poly) < 3:
            raise PrivateError(f"--polygon: expected at least 3 points, got {len(poly)}")
    nets = [str(w) for w in (wifi or [])]
    for w in nets:
        if not 1 <= len(w) <= 64:
            raise PrivateError(f"--wifi: expected an SSID (1-32 bytes) or BSSID, got {w!r}")
    if time and not _TIME.match(time):
        raise PrivateError(f"--time: expected HH:MM-HH:MM (local time, may cross midnight), got {time!r}")
    if circ is None and not poly and not nets and not time:
        raise PrivateError("zone: give --circle, --polygon, --wifi and/or --time")
    return Zone(name, action, circ, poly, [n.lower() if _is_bssid(n) else n for n in nets], time)


def _latlon(lat: float, lon: float, flag: str) -> tuple[float, float]:
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise PrivateError(f"{flag}: expected latitude -90..90 and longitude -180..180, got {lat}, {lon}")
    return lat, lon


def _is_bssid(s: str) -> bool:
    return re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", s) is not None


class ZoneStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.path = private_dir(state_dir) / "zones.json"

    def load(self) -> list[Zone]:
        raw = read_json(self.path, "private zones")
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise PrivateError(f"{self.path}: expected a list of zones")
        out = []
        for d in raw:
            try:
                out.append(parse_zone(d["name"], circle=d.get("circle"), polygon=d.get("polygon"),
                                      wifi=d.get("wifi"), time=d.get("time") or "", action=d.get("action", "pause")))
            except (KeyError, TypeError, PrivateError) as e:
                raise PrivateError(f"{self.path}: a zone entry is malformed ({e})") from None
        return out

    def add(self, zone: Zone) -> None:
        zones = self.load()
        if any(z.name == zone.name for z in zones):
            raise PrivateError(f"zone {zone.name}: already exists (privacy remove {zone.name} first)")
        atomic_json(self.path, [z.to_dict() for z in zones] + [zone.to_dict()])

    def remove(self, name: str) -> bool:
        zones = self.load()
        keep = [z for z in zones if z.name != name]
        if len(keep) == len(zones):
            return False
        atomic_json(self.path, [z.to_dict() for z in keep])
        return True

    def list(self) -> list[dict[str, Any]]:
        return [{"name": z.name, "name_hash": z.name_hash, "kind": z.kind, "action": z.action} for z in self.load()]


class ZoneTracker:
    """Entry/exit bookkeeping over a list of zones: which are active, counts by name hash."""

    def __init__(self, zones: list[Zone], no_fix: str = "strict") -> None:
        self.zones = zones
        self.no_fix = no_fix
        self.inside: set[str] = set()
        self.entries: dict[str, int] = {}
        self.exits: dict[str, int] = {}
        self.no_fix_decisions = 0
        self._entered_at: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def update(self, ctx: Context) -> list[Zone]:
        """The zones the device is in now (no fix + strict: GPS zones count as in)."""
        active = []
        for z in self.zones:
            r = z.inside(ctx)
            if r is None:
                self.no_fix_decisions += 1
                r = self.no_fix == "strict"
            h = z.name_hash
            if r:
                active.append(z)
                if h not in self.inside:
                    self.inside.add(h)
                    self.entries[h] = self.entries.get(h, 0) + 1
                    self._entered_at[h] = time.monotonic()
            elif h in self.inside:
                self.inside.discard(h)
                self.exits[h] = self.exits.get(h, 0) + 1
                self.seconds[h] = self.seconds.get(h, 0.0) + time.monotonic() - self._entered_at.pop(h)
        return active

    def status(self) -> dict[str, Any]:
        return {"zones": len(self.zones), "inside": sorted(self.inside), "entries": dict(self.entries),
                "exits": dict(self.exits), "no_fix_decisions": self.no_fix_decisions}
