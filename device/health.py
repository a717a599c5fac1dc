"""Device health: CPU, temperature, throttling, memory, disk, link; thermal rate limiting; telemetry.

    sampler = HealthSampler(cfg)           # .sample() -> dict (cheap: a few small /proc and /sys reads)
    reporter = HealthReporter(service)     # a housekeeping hook: service.housekeeping.append(reporter)

`HealthReporter` owns no thread: the runtime's housekeeping loop calls it (every 0.5 s); it samples
every `health.telemetry_period`, caps the capture rate when the SoC gets hot (before the firmware
throttles it), and publishes `telemetry` and a retained `status` through the uplink stage.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.console.render import summary_line

log = logging.getLogger("crowdcap.health")

THERMAL_ROOT = Path("/sys/class/thermal")
# `vcgencmd get_throttled` bits (Raspberry Pi firmware)
_THROTTLE_BITS = {0: "under_voltage", 1: "freq_capped", 2: "throttled", 3: "soft_temp_limit"}


def read_temperature(root: Path = THERMAL_ROOT) -> float | None:
    """SoC temperature in °C: the CPU/SoC zone if one is named so, else the hottest zone; None if none."""
    temps: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            value = int((zone / "temp").read_text().strip()) / 1000.0
            kind = (zone / "type").read_text().strip().lower() if (zone / "type").exists() else zone.name
        except (OSError, ValueError):
            continue
        temps[kind] = value
    if not temps:
        return None
    for kind, value in temps.items():
        if "cpu" in kind or "soc" in kind:
            return value
    return max(temps.values())


def read_throttled(vcgencmd: str | None = None) -> dict[str, Any] | None:
    """Raspberry Pi throttling flags from `vcgencmd get_throttled`; None where there is no vcgencmd."""
    exe = vcgencmd or shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=2.0).stdout
        value = int(re.search(r"0x[0-9a-fA-F]+", out).group(0), 16)  # type: ignore[union-attr]
    except (OSError, subprocess.SubprocessError, AttributeError, ValueError):
        return None
    flags = {name: bool(value >> bit & 1) for bit, name in _THROTTLE_BITS.items()}
    flags.update({f"{name}_since_boot": bool(value >> (bit + 16) & 1) for bit, name in _THROTTLE_BITS.items()})
    flags["raw"] = hex(value)
    return flags


def wireless_links(path: Path = Path("/proc/net/wireless")) -> dict[str, dict[str, float]]:
    """Link quality per wireless interface (empty when there is none)."""
    links: dict[str, dict[str, float]] = {}
    try:
        lines = path.read_text().splitlines()[2:]
    except OSError:
        return links
    for line in lines:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) >= 3:
            try:
                links[name.strip()] = {"quality": float(fields[1].rstrip(".")), "level_dbm": float(fields[2].rstrip("."))}
            except ValueError:
                continue
    return links


def _meminfo() -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                out[key] = int(rest.split()[0]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return out


def _rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


class HealthSampler:
    """One health sample: {temperature_c, throttled, cpu, memory, disk, uptime_s, wireless}."""

    def __init__(self, dirs: list[str], *, thermal_root: Path = THERMAL_ROOT, vcgencmd: str | None = None) -> None:
        self.dirs = list(dict.fromkeys(dirs))
        self.thermal_root = thermal_root
        self.vcgencmd = vcgencmd
        self._cpu_prev: tuple[int, int] | None = None

    def sample(self) -> dict[str, Any]:
        load1, load5, _ = os.getloadavg()
        mem = _meminfo()
        disk: dict[str, Any] = {}
        for d in self.dirs:
            try:
                u = shutil.disk_usage(d)
                disk[d] = {"free_mb": round(u.free / 2**20, 1), "used_pct": round(100.0 * u.used / u.total, 1)}
            except OSError as e:
                disk[d] = {"error": e.strerror or str(e)}
        try:
            uptime = float(Path("/proc/uptime").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            uptime = None
        rss = _rss_mb()
        return {
            "temperature_c": read_temperature(self.thermal_root),
            "throttled": read_throttled(self.vcgencmd),
            "cpu": {"load1": round(load1, 2), "load5": round(load5, 2), "cores": os.cpu_count() or 1,
                    "percent": self._cpu_percent()},
            "memory": {"total_mb": round(mem.get("MemTotal", 0.0), 1),
                       "available_mb": round(mem.get("MemAvailable", 0.0), 1),
                       "rss_mb": round(rss, 1) if rss is not None else None},
            "disk": disk,
            "uptime_s": uptime,
            "wireless": wireless_links(),
        }

    def _cpu_percent(self) -> float | None:
        """Whole-machine CPU use since the previous sample, from /proc/stat."""
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle, total = fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)
        prev, self._cpu_prev = self._cpu_prev, (idle, total)
        if prev is None or total <= prev[1]:
            return None
        return round(100.0 * (1 - (idle - prev[0]) / (total - prev[1])), 1)


class ThermalGovernor:
    """Capture-rate cap from the temperature: none below `soft_c`, falling linearly to `min_fps` at
    `hard_c`, with 3 °C hysteresis so the rate does not flap. Firmware throttling flags halve the rate."""

    HYSTERESIS_C = 3.0

    def __init__(self, soft_c: float, hard_c: float, min_fps: float) -> None:
        self.soft_c, self.hard_c, self.min_fps = soft_c, hard_c, min_fps
        self.limit: float | None = None

    def advise(self, temp_c: float | None, base_fps: float, throttled: dict[str, Any] | None = None) -> dict[str, Any]:
        firmware = bool(throttled and (throttled.get("throttled") or throttled.get("soft_temp_limit")))
        limit: float | None = None
        reason = ""
        if temp_c is not None and temp_c >= self.soft_c:
            frac = min(1.0, (temp_c - self.soft_c) / (self.hard_c - self.soft_c))
            limit = base_fps - (base_fps - self.min_fps) * frac
            reason = f"SoC at {temp_c:.1f} °C (soft limit {self.soft_c:.0f} °C)"
        elif temp_c is not None and self.limit is not None and temp_c > self.soft_c - self.HYSTERESIS_C:
            limit, reason = self.limit, f"SoC at {temp_c:.1f} °C, cooling down"
        if firmware:
            limit = min(limit or base_fps, base_fps / 2)
            reason = (reason + "; " if reason else "") + "firmware reports throttling"
        if limit is not None:
            limit = max(self.min_fps, min(base_fps, round(limit)))
            if limit >= base_fps and not firmware:
                limit = None
        self.limit = limit
        if limit is None:
            reason = ""
        state = "ok" if limit is None else ("hot" if limit <= self.min_fps else "warm")
        return {"state": state, "rate_limit_fps": limit, "reason": reason or "normal"}


class HealthReporter:
    """Housekeeping hook: sample, govern the capture rate, publish telemetry and retained status."""

    def __init__(self, service: Any, *, sampler: HealthSampler | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        cfg = service.config
        self.service = service
        self.sampler = sampler or HealthSampler([cfg.uplink.spool_dir, cfg.device.state_dir])
        h = cfg.health
        self.governor = ThermalGovernor(h.thermal_soft_c, h.thermal_hard_c, h.thermal_min_fps)
        self._clock = clock
        self._next = 0.0
        self.last: dict[str, Any] = {}
        self.published = 0
        self.publish_errors = 0
        self.extra: Callable[[], dict[str, Any]] | None = None  # e.g. Operations.status: console, downlink
        self._applied_limit: float | None = None
        self._limit_before: float | None = None

    def __call__(self, service: Any) -> None:
        self.tick(self._clock())

    def sample_for_status(self) -> dict[str, Any]:
        """The latest sample (taken now if there is none yet), for the console's `status`."""
        return self.last or self._sample()

    def tick(self, now: float) -> None:
        if now < self._next:
            return
        self._next = now + self.service.config.health.telemetry_period
        sample = self._sample()
        self.last = sample
        self._govern(sample["thermal"])
        self._publish(sample)

    def _sample(self) -> dict[str, Any]:
        sample = self.sampler.sample()
        sample["thermal"] = self.governor.advise(sample["temperature_c"], self.service.config.capture.fps,
                                                 sample["throttled"])
        return sample

    def _govern(self, advice: dict[str, Any]) -> None:
        limit = advice["rate_limit_fps"]
        if limit == self._applied_limit:
            return
        pipeline = self.service.pipeline
        if self._applied_limit is None:  # remember the operator's cap to restore it when cool
            self._limit_before = getattr(pipeline, "rate_limit_fps", None)
        pipeline.set_rate_limit(limit if limit is not None else self._limit_before)
        if limit is not None:
            log.warning("thermal: capture capped at %.0f fps (%s)", limit, advice["reason"])
        else:
            log.warning("thermal: cool again, capture rate restored")
        self._applied_limit = limit

    def _publish(self, sample: dict[str, Any]) -> None:
        uplink = self.service.stages.get("uplink")
        publish = getattr(uplink, "publish", None)
        if publish is None:
            return
        status = self.service.status()
        status["health"] = sample
        privacy = (status.get("details") or {}).get("redact", {})
        telemetry = {
            "t_utc": time.time(), "device_id": self.service.device_id, "session_id": self.service.session_id,
            "health": sample,
            "pipeline": {k: status.get(k) for k in ("running", "paused", "uptime_s", "frames_captured",
                                                    "frames_dropped", "frames_out", "latency_ms_p50",
                                                    "latency_ms_p99", "stages", "source_faults", "zones")},
            "privacy": {k: privacy.get(k) for k in ("policy_version", "models", "load_error", "frames_withheld",
                                                    "faults", "detector_ms_p50", "detector_ms_p99", "private")},
            "uplink": (status.get("details") or {}).get("uplink", {}),
        }
        if self.extra is not None:
            telemetry["ops"] = self.extra()
        up = telemetry["uplink"]
        retained = {"state": "online", "summary": summary_line(status), "t_utc": telemetry["t_utc"],
                    "session_id": self.service.session_id, "thermal": sample["thermal"],
                    "paused": status.get("paused", False),
                    "link": {k: up.get(k) for k in ("link", "delivery", "last_error", "records_unsent",
                                                    "records_unconfirmed", "oldest_unconfirmed_age_s",
                                                    "resent_unconfirmed")}}
        try:
            publish("telemetry", telemetry)
            publish("status", retained, retain=True)
            self.published += 1
        except Exception as e:  # telemetry must never take the device down
            self.publish_errors += 1
            if self.publish_errors <= 3:
                log.warning("telemetry not published: %s: %s", type(e).__name__, e)
