"""Private places at capture: a source wrapper that knows which of the wearer's zones the device is in.

`ZoneGate(source, state_dir, cfg)` wraps the source the pipeline reads. Before each read the pipeline
asks `hold()`: inside a `pause` zone it is True and the camera is not read at all (the session marks
a gap: counted in status, with its zone's name hash and length, and sent as a `zone_gap` event). Inside a `withhold` zone frames are
read and tagged; the redaction stage drops them (`zone_withheld`). GPS comes from the source's NMEA
receiver (polled here too, so a paused device still notices it left), Wi-Fi from the
`capture.wifi` seam, time from the clock. No fix + `privacy.zone_no_fix = "strict"`: inside.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from capture.frame import RGBDFrame
from capture.wifi import open_scanner
from capture.wrapped import WrappedSource
from redact.private.common import PrivateError, private_dir
from redact.private.config import PrivacyConfig
from redact.private.zones import Context, ZoneStore, ZoneTracker

log = logging.getLogger("crowdcap.zones")

CHECK_EVERY_S = 0.1


class ZoneGate(WrappedSource):
    def __init__(self, source: Any, state_dir: str | Path, cfg: PrivacyConfig, *,
                 clock: Any = datetime.now) -> None:
        super().__init__(source)
        self.state_dir = Path(state_dir)
        self.cfg = cfg
        self.reader = getattr(source, "reader", None)  # capture.nmea.NmeaReader when a GPS is configured
        self.wifi = open_scanner(cfg.wifi_command, cfg.wifi_file)
        self.clock = clock
        self.tracker = ZoneTracker([], cfg.zone_no_fix)
        self.load_error = ""
        self._stamp = -2.0
        self._next_reload = 0.0
        self._paused_by: str | None = None
        self._gap_start = 0.0
        self.gaps: list[dict[str, Any]] = []
        self.counters = {"gaps": 0, "paused_checks": 0, "frames_withheld_tagged": 0}
        self._withhold: list[str] = []
        self.publish: Any = None  # the uplink's publish(kind, payload): each gap is told to the backend
        self._reload()

    # -- Source protocol: intrinsics, depth_scale, fps, offline, open, close from WrappedSource -----
    def read(self) -> RGBDFrame | None:
        frame = self.source.read()
        if frame is not None and self._withhold:
            self.counters["frames_withheld_tagged"] += 1
            frame = frame.replace(attachments={**frame.attachments, "zone_withhold": list(self._withhold)})
        return frame

    # -- the gate ---------------------------------------------------------------------------------
    def _reload(self) -> None:
        try:
            stamp = (private_dir(self.state_dir) / "changed").stat().st_mtime
        except FileNotFoundError:
            stamp = -1.0
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            zones = ZoneStore(self.state_dir).load()
            self.load_error = ""
        except PrivateError as e:  # fail closed: an unreadable zones file pauses capture
            self.load_error = str(e)
            log.error("privacy zones unreadable, capture paused until fixed: %s", e)
            zones = []
        self.tracker.zones = zones

    def context(self) -> Context:
        fix = None
        if self.reader is not None:
            if self._paused_by is not None:  # nothing reads the GPS while paused: the gate must notice leaving
                self.reader.poll()
            latest = self.reader.latest
            if latest is not None and latest.valid and latest.lat is not None and latest.lon is not None \
                    and time.monotonic_ns() - latest.t_mono_ns < 10_000_000_000:
                fix = (latest.lat, latest.lon)
        wifi = self.wifi.seen() if self.wifi is not None else set()
        return Context(fix=fix, wifi=wifi, now=self.clock())

    def hold(self) -> bool:
        """True: do not read the camera now (inside a pause zone, or zones unreadable)."""
        now = time.monotonic()
        if now >= self._next_reload:
            self._next_reload = now + 1.0
            self._reload()
        if self.load_error:
            self._pause("unreadable")
            return True
        if not self.tracker.zones:
            self._resume()
            self._withhold = []
            return False
        active = self.tracker.update(self.context())
        pause = [z for z in active if z.action == "pause"]
        self._withhold = [z.name_hash for z in active if z.action == "withhold"]
        if pause:
            self._pause(pause[0].name_hash)
            self.counters["paused_checks"] += 1
            return True
        self._resume()
        return False

    def _pause(self, why: str) -> None:
        if self._paused_by is None:
            self._paused_by, self._gap_start = why, time.time()
            log.info("capture paused: private zone %s", why)

    def _resume(self) -> None:
        if self._paused_by is not None:
            self.counters["gaps"] += 1
            gap = {"zone": self._paused_by, "start": round(self._gap_start, 3),
                   "seconds": round(time.time() - self._gap_start, 3)}
            self.gaps.append(gap)
            del self.gaps[:-20]
            if self.publish is not None:  # the session marks the gap (an event, spooled and confirmed)
                try:
                    self.publish("event", {"type": "zone_gap", **gap})
                except Exception as e:  # noqa: BLE001 - the gap is still counted in status
                    log.warning("zone gap not published: %s", e)
            log.info("capture resumed after %.1f s in private zone %s", time.time() - self._gap_start,
                     self._paused_by)
            self._paused_by = None

    def zone_status(self) -> dict[str, Any]:
        out = {**self.tracker.status(), **self.counters, "paused_by": self._paused_by, "gap_log": self.gaps[-5:]}
        if self.load_error:
            out["load_error"] = self.load_error
        if self.wifi is not None and self.wifi.error:
            out["wifi_error"] = self.wifi.error
        return out


def attach_zones(source: Any, state_dir: Path, cfg: PrivacyConfig, stages: list[Any]) -> ZoneGate:
    """Wrap `source`; the redaction stage's private layer reports the zones in its status."""
    gate = ZoneGate(source, state_dir, cfg)
    for stage in stages:
        layer = getattr(stage, "private", None)
        if layer is not None:
            layer.zone_status = gate.zone_status
        if getattr(stage, "name", "") == "uplink" and callable(getattr(stage, "publish", None)):
            gate.publish = stage.publish
    return gate
