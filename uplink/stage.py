"""`UplinkStage`: the pipeline's last stage — encode, spool (durable), and hand over to the `Sender`.

    stage = uplink.build_stage(cfg.uplink, device_id, session_id)
    stage.start()              # starts the Sender thread (no-op without a broker); apply() also does it lazily
    pipeline stages: [..., stage]
    stage.drain(timeout)       # at shutdown: True when every accepted record is confirmed (uplink.delivery:
                               # "ingest" = the ingest's ack; "broker" = PUBACKs); else stage.undelivered()
    stage.close()              # retained "offline" status, stop the sender, close the spool

`apply` refuses an unredacted frame (FrameWithheld "unredacted"): nothing raw reaches the spool.
A frame is "accepted" when `apply` returns: it is in the spool (durable per the fsync policy).
Otherwise it raises FrameWithheld: "bandwidth" (degrade policy: keyframes only) or "spool_full"
(quota reached, nothing of lower priority left to evict) — both also counted in `status()`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from capture.config import ConfigError
from capture.frame import FrameWithheld, RGBDFrame
from uplink import messages, plain, wire
from uplink.budget import DEGRADE_KEYFRAMES_ONLY, DEGRADE_NAMES, DEGRADE_QUALITY, degrade_level
from uplink.config import UplinkConfig
from uplink.mqtt_client import topic
from uplink.sender import Sender
from uplink.spool import PRIO_CLOUD, PRIO_CONTROL, PRIO_FRAME, PRIO_KEYFRAME, PRIO_TELEMETRY, Spool

log = logging.getLogger(__name__)

_JSON_PRIORITY = {"telemetry": PRIO_TELEMETRY, "event": PRIO_CONTROL, "status": PRIO_CONTROL,
                  "cmd_result": PRIO_CONTROL}


class UplinkStage:
    name = "uplink"

    def __init__(self, cfg: UplinkConfig, device_id: str, session_id: str,
                 signer: Callable[[bytes], bytes] | None = None) -> None:
        self.cfg = cfg
        self.signer = signer  # Ed25519 signing of every message (uplink/identity.py; wire v1.1)
        self.device_id = device_id
        self.session_id = session_id
        try:
            self.codec = messages.depth_codec(cfg.depth_codec)
        except ValueError as e:
            raise ConfigError(f"uplink.depth_codec: {e}") from None
        Path(cfg.spool_dir).mkdir(parents=True, exist_ok=True)
        live, segment = spool_sizes(int(cfg.spool_quota_mb * 1024 * 1024))
        self.spool = Spool(cfg.spool_dir, quota_bytes=live, fsync=cfg.fsync, fsync_interval_ms=cfg.fsync_interval_ms,
                           segment_bytes=segment, reserve_bytes=int(cfg.spool_reserve_mb * 1024 * 1024))
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._json_seq = itertools.count(1)
        self._latest_status: bytes | None = None
        self.degrade = 0
        self.sender: Sender | None = None
        if cfg.broker:
            will = plain.encode("status", device_id, session_id, 0, time.time(), {"state": "offline"})
            self.sender = Sender(cfg, device_id, self.spool, will_payload=will, status_payload=self._connect_status)
            self.sender.signer = signer
        self._started = False
        self.takebacks: list[Any] = []  # uplink.takeback.TakeBack, kept ~2 min for frames still in the pipeline

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sender thread (idempotent; nothing to start in spool-only mode)."""
        if not self._started:
            self._started = True
            if self.sender is not None:
                self.sender.start()

    def drain(self, timeout: float) -> bool:
        """Wait until every accepted record is delivered (ingest-confirmed, or PUBACKed with
        delivery = "broker"); False on timeout or with no broker and a backlog (see `undelivered`)."""
        self.spool.sync()
        if self.sender is None or not self._started:
            return len(self.spool) == 0
        return self.sender.wait_idle(timeout)

    def undelivered(self) -> str:
        """What is still not delivered and why ('' if nothing)."""
        if self.sender is None:
            return f"{len(self.spool)} record(s) in the spool: no broker configured" if len(self.spool) else ""
        return self.sender.undelivered_reason()

    def flush(self) -> dict[str, Any]:
        """Make everything accepted durable now and nudge the sender (console `spool flush`)."""
        self.spool.sync()
        if self.sender is not None:
            self.sender.wake()
        return {"records": len(self.spool), "bytes": self.spool.live_bytes,
                "connected": bool(self.sender and self.sender.connected)}

    def close(self) -> None:
        if self.sender is not None:
            if self._started and self.sender.connected:
                self.sender.send_direct(topic(self.device_id, "status"), self._json("status", {"state": "offline"}),
                                        retain=True)
                deadline = time.monotonic() + 1.0
                while self.sender.direct_pending() and time.monotonic() < deadline:
                    time.sleep(0.01)
            self.sender.stop()
        self.spool.close()

    # ---- the stage ----------------------------------------------------------------------------

    def apply(self, frame: RGBDFrame) -> RGBDFrame:
        if frame.redaction is None:
            raise FrameWithheld("unredacted", "the uplink only stores and sends redacted frames")
        if not self._started:
            self.start()
        if self.takebacks:  # a take-back covering a frame still in the pipeline when it was issued
            frame = self._take_back_filter(frame)
        level = self._degrade_level()
        if level >= DEGRADE_KEYFRAMES_ONLY and not frame.keyframe:
            self._count("degraded_dropped_frames")
            raise FrameWithheld("bandwidth", "over the uplink budget: keyframes only")
        quality, flags = self.cfg.jpeg_quality, 0
        if level >= DEGRADE_QUALITY:
            quality, flags = min(quality, self.cfg.degraded_jpeg_quality), wire.FLAG_DEGRADED
            self._count("degraded_quality_frames")
        data = wire.encode(messages.encode_frame(frame, self.codec, quality, flags))
        prio = PRIO_KEYFRAME if frame.keyframe else PRIO_FRAME
        if self.spool.append(data, prio, wire.FRAME) is None:
            raise FrameWithheld("spool_full", "quota reached and nothing of lower priority to evict")
        self._count("frames_accepted")
        self._count("frame_bytes", len(data))
        cloud = frame.attachments.get("cloud")
        if cloud is not None:
            cdata = wire.encode(messages.encode_cloud(frame, cloud))
            if self.spool.append(cdata, PRIO_CLOUD, wire.CLOUD) is not None:
                self._count("clouds_accepted")
        if self.sender is not None:
            self.sender.wake()
        return frame

    def _degrade_level(self) -> int:
        level = degrade_level(self.spool.live_bytes, self.cfg.bandwidth, self.cfg.degrade_after)
        if level != self.degrade:
            self._count(f"degrade_to_{DEGRADE_NAMES[level]}")
            self.degrade = level
        return level

    # ---- take-backs (uplink/takeback.py) ----------------------------------------------------------

    def take_back(self, seconds: float, region: list[int] | None) -> dict[str, Any]:
        """`privacy redact-last`: re-redact (region) or drop (None) what of the last `seconds` is still
        in the spool, and tell the backend (a `takeback` event) to do the same with what it has."""
        from uplink import takeback

        tb = takeback.TakeBack.last(seconds, region)
        with self._lock:
            self.takebacks = [t for t in self.takebacks if time.time() - t.t_to < 120.0] + [tb]
        counts = self.spool.rewrite({wire.FRAME, wire.CLOUD}, tb.since_mono,
                                    lambda data, rec: takeback.redo(data, rec.kind, tb))
        self.publish("event", tb.message(self.session_id))
        self._count("takebacks")
        return {"id": tb.id, "from": tb.t_from, "to": tb.t_to, "region": region,
                "spool_rewritten": counts["rewritten"], "spool_dropped": counts["dropped"],
                "in_flight": counts["in_flight"], "backend_told": True}

    def _take_back_filter(self, frame: RGBDFrame) -> RGBDFrame:
        from uplink import takeback

        try:
            out = takeback.filter_frame(frame, self.takebacks)
        except FrameWithheld:
            self._count("taken_back_in_pipeline")
            raise
        if out is not frame:
            self._count("taken_back_in_pipeline")
        return out

    # ---- JSON messages and commands -------------------------------------------------------------

    def _json(self, kind: str, payload: dict) -> bytes:
        """status / telemetry: plain JSON (uplink/plain.py); event / cmd_result: the wire envelope."""
        if kind in plain.KINDS:
            return plain.encode(kind, self.device_id, self.session_id, next(self._json_seq), time.time(), payload)
        return wire.encode(messages.encode_json(kind, self.device_id, self.session_id, next(self._json_seq),
                                                time.time(), payload))

    def publish(self, kind: str, payload: dict, retain: bool = False) -> None:
        """status / telemetry as plain JSON, event in the wire envelope. retain=True: latest-value
        semantics (sent directly, the newest replaces an unsent older one, re-sent on every connect for
        status); otherwise spooled like frames (events and status outrank frames; telemetry is evicted
        first) and confirmed by the ingest."""
        if kind not in ("status", "telemetry", "event"):
            raise ValueError(f"kind: expected status, telemetry or event, got {kind!r}")
        data = self._json(kind, payload)
        if retain:
            one = data if kind in plain.KINDS else wire.single_chunk(data, self.signer)
            if kind == "status":
                self._latest_status = one
            if self.sender is not None:
                self.sender.send_direct(topic(self.device_id, kind), one, retain=True)
            return
        self.spool.append(data, _JSON_PRIORITY[kind], wire.TYPE_BY_NAME[kind])
        self._count(f"{kind}_accepted")
        if self.sender is not None:
            self.sender.wake()

    def publish_command_result(self, payload: dict) -> None:
        """A command's result on crowdcap/v1/<device>/cmd/result (spooled, high priority)."""
        self.spool.append(self._json("cmd_result", payload), PRIO_CONTROL, wire.CMD_RESULT)
        if self.sender is not None:
            self.sender.wake()

    def on_command(self, callback: Callable[[bytes], None]) -> None:
        """Call `callback(raw payload)` (in the sender thread; keep it quick) for each message on
        crowdcap/v1/<device>/cmd. The subscription is made on every connect."""
        if self.sender is not None:
            self.sender.on_command = callback

    def _connect_status(self) -> bytes:
        return self._latest_status or self._json("status", {"state": "online"})

    # ---- health ---------------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def status(self) -> dict[str, Any]:
        sp = self.spool.stats()
        snd = self.sender.stats() if self.sender is not None else {"connected": False, "inflight_chunks": 0}
        with self._lock:
            counters = dict(self.counters)
        unconfirmed = snd.get("unconfirmed", 0)
        return {
            "broker": self.cfg.broker or None,
            "delivery": self.cfg.delivery, "link": snd.get("link", "none"),
            "records_unsent": max(0, sp["records"] - unconfirmed), "records_unconfirmed": unconfirmed,
            "oldest_unconfirmed_age_s": snd.get("oldest_unconfirmed_age_s", 0.0),
            "resent_unconfirmed": snd.get("resent_unconfirmed", 0),
            "spool": sp,
            "spool_records": sp["records"], "spool_bytes": sp["bytes"],
            "oldest_unsent_age_s": sp["oldest_unsent_age_s"],
            "evictions": sp["evictions"],
            "connected": snd["connected"], "inflight": snd["inflight_chunks"],
            "last_error": snd.get("last_error", "") if self.sender is not None else "no broker configured",
            "sent": snd.get("records_sent", 0), "bytes_per_s": snd.get("bytes_per_s", 0.0),
            "degrade_level": self.degrade, "degrade": DEGRADE_NAMES[self.degrade],
            "sender": snd, **counters,
        }


def spool_sizes(disk_budget: int) -> tuple[int, int]:
    """(live-record quota, segment size) for a disk budget. The spool lets dead (delivered/evicted)
    bytes reach half the live quota plus one segment before it compacts, and the active segment may
    overshoot by one record: live data gets about 2/3 of the budget, so the files on disk stay within
    it (an SD card must not fill up)."""
    segment = max(64 << 10, min(64 << 20, disk_budget // 24))
    return max(1, int((disk_budget - 2 * segment) / 1.5)), segment


def live_quota(disk_budget: int) -> int:
    return spool_sizes(disk_budget)[0]


def build_stage(cfg: UplinkConfig, device_id: str, session_id: str,
                signer: Callable[[bytes], bytes] | None = None) -> UplinkStage:
    return UplinkStage(cfg, device_id, session_id, signer)
