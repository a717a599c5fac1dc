"""The running device: config → source → stages → pipeline, plus the housekeeping loop.

`Service` is what `crowdcap run`, `crowdcap demo` and `crowdcap record` start. It owns the pipeline,
the stages (by name), the session id, a ring of recent log lines, and a list of housekeeping hooks
(health telemetry, sd_notify watchdog, console) that run every `HOUSEKEEPING_S` seconds on the
caller's thread — not on the frame path.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capture import open_source
from capture.frame import RGBDFrame, Source, SourceError, Stage
from device import settings
from device.config import Config, ConfigError
from device.pipeline import Pipeline
from device.zones import attach_zones

log = logging.getLogger("crowdcap.runtime")

HOUSEKEEPING_S = 0.5
MODEL_CACHE = "model-cache"  # under device.state_dir, unless redact.cache_dir names a folder
TRIM_S = 1.0  # freed heap memory goes back to the kernel this often (device/memory.py)


class RedactionDisabled:
    """Stands in for the redactor when `redact.enabled = false` (trusted, already-redacted replays).

    It marks the manifest so the backend sees that this device did not redact these frames.
    """

    name = "redact"

    def apply(self, frame: RGBDFrame) -> RGBDFrame:
        return frame.replace(redaction={"policy_version": "disabled", "coverage": "disabled", "models": [],
                                        "regions": [], "detector_ms": 0.0})


class TumRecorder:
    """Sink stage for `crowdcap record`: writes redacted frames in the TUM layout."""

    name = "record"

    def __init__(self, out_dir: Path) -> None:
        from capture.tum import TumWriter

        self.writer = TumWriter(out_dir)

    def apply(self, frame: RGBDFrame) -> RGBDFrame:
        if frame.redaction is None:  # fail closed: raw frames are never written
            from capture.frame import FrameWithheld

            raise FrameWithheld("unredacted")
        self.writer.append(frame)
        return frame

    def close(self) -> None:
        self.writer.close()


def next_session_id(state_dir: Path) -> str:
    """A new session id; the counter survives restarts so the backend can tell sessions apart."""
    state_dir.mkdir(parents=True, exist_ok=True)
    counter_file = state_dir / "session_counter"
    try:
        n = int(counter_file.read_text().strip()) + 1
    except (FileNotFoundError, ValueError):
        n = 1
    tmp = counter_file.with_suffix(".tmp")
    with tmp.open("w") as fh:
        fh.write(f"{n}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, counter_file)
    return f"s{n:06d}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


class _RingHandler(logging.Handler):
    def __init__(self, ring: deque[str]) -> None:
        super().__init__(logging.INFO)
        self.ring = ring
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.ring.append(self.format(record))
        except Exception:  # a log line must never break the device
            pass


def build_stages(cfg: Config, device_id: str, session_id: str, *, record_dir: Path | None = None) -> list[Stage]:
    """The stage chain the config asks for: redact → depth → uplink (or → recorder)."""
    stages: list[Stage] = []
    if cfg.redact.enabled:
        import dataclasses

        import redact
        from redact.private.layer import PrivateLayer

        redact_cfg = cfg.redact
        if not redact_cfg.cache_dir:
            # Prepared models on disk beside the device's state (checked against their digest when read):
            # after the first start no model is prepared again, so onnx (~22 MB resident) is not imported.
            redact_cfg = dataclasses.replace(redact_cfg, cache_dir=str(Path(cfg.device.state_dir) / MODEL_CACHE))
        redaction = redact.build_stage(redact_cfg, private=PrivateLayer.load(cfg.device.state_dir, cfg.privacy))
        stages += redaction.pipeline_stages()  # "redact", and "redact-finish" with redact.split_threads
    elif cfg.capture.source.partition(":")[0] in ("replay", "synthetic"):
        stages.append(RedactionDisabled())
    else:  # fail closed: a camera's frames never leave unredacted, whatever the config says
        raise ConfigError(f"redact.enabled: false is only for replay:DIR (already-redacted recordings) and "
                          f"synthetic sources, not for the camera {cfg.capture.source!r}")
    if cfg.depth.enabled:
        import depth

        stages.append(depth.build_stage(cfg.depth))
    if record_dir is not None:
        stages.append(TumRecorder(record_dir))
    else:
        import uplink
        from uplink.identity import DeviceKey, link_warnings

        for warning in link_warnings(cfg.uplink.broker, cfg.uplink.username):
            log.warning("uplink: %s", warning)
        try:  # the device's signing key: made at first start, registered once with the backend
            key = DeviceKey.load_or_create(cfg.device.state_dir)
        except (OSError, ValueError) as e:
            raise ConfigError(f"device.state_dir: {e}") from None
        stages.append(uplink.build_stage(cfg.uplink, device_id, session_id, signer=key.sign))
    return stages


def capture_queue_size(cfg: Config) -> int:
    """Frames that may wait for redaction before the oldest is dropped: `pipeline.capture_queue`, or with 0
    (auto) `redact.face_every + 2`. The redaction's face thread spends a key frame's detection (30-70 ms,
    1-2 frame times) on one frame and its finish thread has bursts (an object search, a text pass); with
    2, frames were dropped although the average kept up (`bench e2e --sources demo --fps 10`, load ~8:
    8.7 % dropped with 2, 0 with 6). A frame waiting here counts in its latency like any other wait."""
    if cfg.pipeline.capture_queue:
        return cfg.pipeline.capture_queue
    return cfg.redact.face_every + 2 if cfg.redact.enabled else 2


class Service:
    """One running device session. Construct, `start()`, then `wait()` (or drive it yourself)."""

    def __init__(self, config: Config, config_path: Path | None = None, *, max_frames: int | None = None,
                 source: Source | None = None, stages: list[Stage] | None = None,
                 record_dir: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.device_id = config.device.resolved_id
        self.state_dir = Path(config.device.state_dir)
        self.session_id = next_session_id(self.state_dir)
        cap = config.capture
        self.source = source or open_source(
            cap.source, width=cap.width, height=cap.height, fps=cap.fps, pace=cap.pace, seed=cap.seed,
            loop=cap.loop, device_id=self.device_id, session_id=self.session_id, gps=cap.gps or None,
            gps_baud=cap.gps_baud, prerender=cap.prerender, replay_cache_mb=cap.replay_cache_mb)
        chain = stages if stages is not None else build_stages(config, self.device_id, self.session_id,
                                                               record_dir=record_dir)
        zones_file = self.state_dir / "private" / "zones.json"
        if config.privacy.enabled and (source is None or zones_file.exists()):  # private places: not read inside
            self.source = attach_zones(self.source, self.state_dir, config.privacy, chain)
        self.stages: dict[str, Stage] = {s.name: s for s in chain}
        self.pipeline = Pipeline(self.source, chain, capture_queue=capture_queue_size(config),
                                 stage_queue=config.pipeline.stage_queue, max_frames=max_frames)
        self.log_ring: deque[str] = deque(maxlen=1000)
        self._log_handler = _RingHandler(self.log_ring)
        logging.getLogger().addHandler(self._log_handler)
        self.housekeeping: list[Callable[[Service], None]] = []
        self.started_at = 0.0
        self.restart_requested = False  # set by the console/downlink; `run` then exits 75 for systemd
        self._stop = threading.Event()
        self._closed = False
        self._trimmed_at = 0.0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, *, wait_for_source: bool = False) -> None:
        """Open the source and start the stages and pipeline. With `wait_for_source`, a camera that is
        not there yet is not fatal: the capture loop keeps reconnecting and status shows the gap."""
        self.started_at = time.time()
        try:
            self.source.open()
        except SourceError as e:
            if not wait_for_source:
                raise
            log.warning("source not ready, will keep retrying: %s", e)
        for stage in self.stages.values():
            start = getattr(stage, "start", None)
            if callable(start):
                start()
        self.pipeline.start()
        log.info("session %s started on %s (stages: %s)", self.session_id, self.device_id,
                 " → ".join(self.stages))

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop capture; what was accepted is flushed (main thread only)."""
        def handler(signum: int, _frame: Any) -> None:
            log.info("signal %d: stopping", signum)
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def wait(self, *, until: float | None = None, tick: Callable[[Service], None] | None = None) -> None:
        """Run housekeeping until the pipeline ends, a stop is requested, or `until` (monotonic)."""
        while not self.pipeline.finished.is_set() and not self._stop.is_set():
            if until is not None and time.monotonic() >= until:
                break
            self.run_housekeeping()
            if tick is not None:
                tick(self)
            self._stop.wait(HOUSEKEEPING_S)
        self.pipeline.stop()

    def run_housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._trimmed_at >= TRIM_S:  # the device's resident memory near what it uses
            from device.memory import trim_malloc

            self._trimmed_at = now
            trim_malloc()
        for hook in list(self.housekeeping):
            try:
                hook(self)
            except Exception as e:  # a failing hook is logged, never fatal
                log.warning("housekeeping %s failed: %s", getattr(hook, "__name__", hook), e)

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop capture and let queued frames pass through; True if the pipeline finished in time."""
        self.pipeline.stop()
        return self.pipeline.join(timeout)

    def drain(self, timeout: float) -> bool:
        """Wait until everything accepted has been delivered (uplink acks); True if it was."""
        uplink = self.stages.get("uplink")
        drain = getattr(uplink, "drain", None)
        return bool(drain(timeout)) if callable(drain) else True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pipeline.stop()
        if not self.pipeline.join(5.0) and (left := self.pipeline.unfinished()):
            # A stage is stuck: what it and the queues after redaction hold is lost with this process.
            log.error("shutdown: %d accepted frame(s) not stored (a stage did not finish: %s)", left,
                      self.pipeline.stalled_stage(0.0) or "unknown")
        for stage in self.stages.values():
            close = getattr(stage, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as e:
                    log.warning("closing stage %s: %s", stage.name, e)
        self.source.close()
        logging.getLogger().removeHandler(self._log_handler)

    # -- state for console, telemetry, status ---------------------------------------------------
    def status(self) -> dict[str, Any]:
        snap = self.pipeline.snapshot()
        snap.update(device_id=self.device_id, session_id=self.session_id, started_at=self.started_at,
                    source=self.config.capture.source)
        details = {}
        for name, stage in self.stages.items():
            fn = getattr(stage, "status", None)
            if callable(fn):
                try:
                    details[name] = fn()
                except Exception as e:
                    details[name] = {"error": f"{type(e).__name__}: {e}"}
        snap["details"] = details
        zones = getattr(self.source, "zone_status", None)  # device/zones.py: private places (name hashes only)
        if callable(zones):
            snap["zones"] = zones()
        return snap

    def set_config(self, key: str, value_text: str) -> Config:
        """Apply a validated setting to the running service (live where possible). Persisting to the
        config file is `device.configset`'s job; it calls this, never the other way round."""
        new = settings.with_value(self.config, key, settings.parse_text(value_text))
        self.config = new
        if key == "capture.fps":
            self.pipeline.set_rate_limit(new.capture.fps)
        return new
