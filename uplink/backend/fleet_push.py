"""`crowdcap fleet push`: signed updates to devices over the broker, in waves, with a canary halt.

For each device one command is signed (fleet.py) with a fresh request id and published (QoS 1, not
retained) on `crowdcap/v1/<device>/cmd`; its answer comes back on `crowdcap/v1/<device>/cmd/result`
(a wire message, docs/wire-format.md) and is matched by request id. With a canary share the first
wave is that share of the devices (at least one); the second wave is published only when every
canary answered ok — a refusal, a failed self-test, a rollback or no answer within the timeout halts
the rollout and the remaining devices are marked `halted` (not touched). A model the device activates by
restarting counts as ok only once telemetry from its new session names it (else `rolled_back`, or
`restarting` when no telemetry came in time). `--all` finds devices from
their retained status topics (online ones). The key is used to sign and never leaves this module.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from uplink import wire
from uplink.backend import fleet
from uplink.config import parse_broker

log = logging.getLogger("crowdcap.fleet")
ROOT = "crowdcap/v1"


@dataclass
class Target:
    device: str
    wave: str
    request_id: str = ""
    # pending, sent, ok, failed, rolled_back, selftest_failed, rejected, timeout, restarting (unconfirmed), halted
    status: str = "pending"
    detail: str = ""
    result: dict[str, Any] | None = None
    seconds: float | None = None

    def row(self) -> dict[str, Any]:
        return {"device": self.device, "wave": self.wave, "status": self.status, "detail": self.detail,
                "request_id": self.request_id, "seconds": self.seconds}


@dataclass
class _Inbox:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    telemetry: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)


def _json_payload(payload: bytes) -> tuple[str, dict[str, Any]] | None:
    """(kind, JSON) of a single-chunk JSON wire message (its device signature, if any, is not checked
    here: the result only reports, it authorises nothing), or of plain JSON (status, telemetry, a last
    will); None if neither."""
    try:
        chunk = wire.parse_chunk(payload)
        message, _signature = wire.split_signature(chunk.data, chunk.signed)  # wire v1.1
        msg = wire.decode(message)
        return msg.kind, msg.meta()
    except (wire.WireError, ValueError, KeyError):
        pass
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return ("json", obj) if isinstance(obj, dict) else None


def judge(cmd: str, result: dict[str, Any]) -> tuple[str, str]:
    """(status, detail) of a device's cmd/result."""
    if result.get("ok"):
        r = result.get("result") or {}
        if cmd == "policy update":
            return "ok", f"policy {r.get('policy_version', '?')} in force"
        if cmd == "model update":
            st = r.get("selftest") or {}
            model = r.get("model") or {}
            return "ok", (f"model {model.get('name', '?')}@{model.get('version', '?')} {r.get('applied', '')}, "
                          f"self-test recall {st.get('recall', '?')}")
        return "ok", "done"
    detail = str(result.get("detail") or result.get("reason") or "failed")[:200]
    if result.get("reason") not in (None, "failed"):
        return "rejected", f"{result['reason']}: {detail}"
    if "rolled back" in detail or "previous policy kept" in detail:
        return "rolled_back", detail
    if "self-test failed" in detail:
        return "selftest_failed", detail
    return "failed", detail


class Push:
    def __init__(self, broker_url: str, key: Any, cmd: str, args: dict[str, Any], *, ttl_s: float = 300.0,
                 timeout_s: float = 60.0, username: str = "", password: str = "") -> None:
        _, self.host, self.port, tls = parse_broker(broker_url)
        self._key = key
        self.cmd, self.args = cmd, args
        self.ttl_s, self.timeout_s = ttl_s, timeout_s
        self.inbox = _Inbox()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"crowdcap-fleet-{secrets.token_hex(4)}",
                                  protocol=mqtt.MQTTv311)
        if tls:
            self.client.tls_set()
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()

    # -- broker -----------------------------------------------------------------------------------
    def connect(self) -> None:
        connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as e:
            raise ConnectionError(f"fleet push: broker {self.host}:{self.port}: {e.strerror or e}") from None
        self.client.loop_start()
        if not connected.wait(10):
            self.close()
            raise ConnectionError(f"fleet push: broker {self.host}:{self.port} did not accept the connection in 10 s")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        parts = msg.topic.split("/")
        decoded = _json_payload(msg.payload)
        if decoded is None or len(parts) < 4:
            return
        kind, obj = decoded
        device = parts[2]
        with self.inbox.cond:
            if parts[3] == "cmd" and len(parts) == 5 and parts[4] == "result" and kind in ("cmd_result", "json"):
                rid = obj.get("id")
                if isinstance(rid, str):
                    self.inbox.results[rid] = obj
            elif parts[3] == "status":
                self.inbox.status[device] = obj
            elif parts[3] == "telemetry":
                self.inbox.telemetry[device] = (time.monotonic(), obj)
            self.inbox.cond.notify_all()

    def _subscribe(self, topic_filter: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic_filter, qos=1)
        if not self._subscribed.wait(10):
            raise ConnectionError(f"fleet push: no SUBACK for {topic_filter} in 10 s")

    def discover(self, wait_s: float = 2.0) -> list[str]:
        """Devices whose retained status says they are online (read for `wait_s`)."""
        self._subscribe(f"{ROOT}/+/status")
        deadline = time.monotonic() + wait_s
        with self.inbox.cond:
            while time.monotonic() < deadline:
                self.inbox.cond.wait(max(0.0, deadline - time.monotonic()))
            found = {d: s for d, s in self.inbox.status.items()}
        return sorted(d for d, s in found.items() if s.get("state", "online") != "offline")

    # -- rollout ----------------------------------------------------------------------------------
    def run(self, devices: list[str], canary_pct: float = 0.0) -> dict[str, Any]:
        devices = [fleet.check_device(d) for d in dict.fromkeys(devices)]
        if not devices:
            raise fleet.FleetError("no devices to push to")
        n_canary = max(1, math.ceil(len(devices) * canary_pct / 100.0)) if canary_pct > 0 else 0
        n_canary = min(n_canary, len(devices))
        targets = [Target(d, "canary" if i < n_canary else "rollout") for i, d in enumerate(devices)]
        for d in devices:
            self._subscribe(f"{ROOT}/{d}/cmd/result")
            if self.cmd == "model update":  # a model activated by a restart is confirmed by telemetry
                self._subscribe(f"{ROOT}/{d}/status")
                self._subscribe(f"{ROOT}/{d}/telemetry")
        waves = [[t for t in targets if t.wave == "canary"], [t for t in targets if t.wave == "rollout"]]
        halted = ""
        for wave in waves:
            if not wave:
                continue
            if halted:
                for t in wave:
                    t.status, t.detail = "halted", halted
                continue
            self._wave(wave)
            bad = [t for t in wave if t.status != "ok"]
            if bad and wave[0].wave == "canary":
                halted = f"canary {bad[0].device} {bad[0].status}: rollout halted"
                log.error("fleet push: %s (%s)", halted, bad[0].detail)
        ok = all(t.status == "ok" for t in targets)
        return {"ok": ok, "halted": bool(halted), "cmd": self.cmd, "version": self.args.get("_version"),
                "key": fleet.fingerprint(self._key), "canary": n_canary, "devices": [t.row() for t in targets]}

    def _wave(self, wave: list[Target]) -> None:
        t0 = time.monotonic()
        for t in wave:
            t.request_id = f"fleet-{secrets.token_hex(6)}"
            raw = fleet.sign(self._key, t.device, self.cmd, self.args, ttl_s=self.ttl_s, request_id=t.request_id)
            info = self.client.publish(f"{ROOT}/{t.device}/cmd", raw, qos=1)
            t.status = "sent" if info.rc == mqtt.MQTT_ERR_SUCCESS else "failed"
            if t.status == "failed":
                t.detail = f"publish failed: {mqtt.error_string(info.rc)}"
            log.info("fleet push: %s to %s (request %s)", self.cmd, t.device, t.request_id)
        deadline = t0 + self.timeout_s
        with self.inbox.cond:
            while True:
                for t in wave:
                    if t.status == "sent" and t.request_id in self.inbox.results:
                        t.result = self.inbox.results[t.request_id]
                        t.status, t.detail = judge(self.cmd, t.result)
                        t.seconds = round(time.monotonic() - t0, 2)
                if all(t.status != "sent" for t in wave) or time.monotonic() >= deadline:
                    break
                self.inbox.cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))
        for t in wave:
            if t.status == "sent":
                t.status, t.detail = "timeout", f"no cmd/result within {self.timeout_s:.0f} s"
        self._confirm_restarts(wave, deadline)

    def _confirm_restarts(self, wave: list[Target], deadline: float) -> None:
        """A model update the device activates by restarting is only in force if the restarted service
        loaded it (else `check_pending` rolls it back): wait for telemetry from a new session and read
        the models it runs."""
        pending = {}
        with self.inbox.cond:
            for t in wave:
                r = (t.result or {}).get("result") or {}
                if t.status == "ok" and self.cmd == "model update" and r.get("applied") == "restart":
                    old = self.inbox.status.get(t.device, {}).get("session_id")
                    pending[t.device] = (t, r.get("model") or {}, old)
                    t.status, t.detail = "restarting", "restart to activate: no telemetry from the new session yet"
            while pending and time.monotonic() < deadline:
                for device, (t, want, old) in list(pending.items()):
                    tel = self.inbox.telemetry.get(device)
                    if tel is None or tel[1].get("session_id") in (None, old):
                        continue
                    privacy = tel[1].get("privacy") or {}
                    models = [m for m in privacy.get("models") or [] if isinstance(m, dict)]
                    names = ", ".join(f"{m.get('name')}@{m.get('version')}" for m in models) or "no model"
                    if any(m.get("name") == want.get("name") and m.get("version") == want.get("version")
                           for m in models) and not privacy.get("load_error"):
                        t.status, t.detail = "ok", f"model {names} active after restart"
                    else:
                        t.status, t.detail = "rolled_back", f"after restart the device runs {names}"
                    del pending[device]
                if pending:
                    self.inbox.cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))


def table(doc: dict[str, Any]) -> str:
    lines = [f"fleet push: {doc['cmd']} {doc.get('version') or ''} (key {doc['key']}), "
             f"{doc['canary']} canary device(s)"]
    head = f"{'device':<24} {'wave':<8} {'status':<16} {'s':>6}  detail"
    lines += [head, "-" * len(head)]
    for r in doc["devices"]:
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(f"{r['device'][:24]:<24} {r['wave']:<8} {r['status']:<16} {secs:>6}  {r['detail']}")
    n_ok = sum(r["status"] == "ok" for r in doc["devices"])
    lines.append(f"{n_ok}/{len(doc['devices'])} ok" + (" — HALTED by a canary" if doc["halted"] else ""))
    return "\n".join(lines)
