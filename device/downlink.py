"""Signed commands from the backend on `crowdcap/v1/<device_id>/cmd`, answered on `.../cmd/result`.

The message layout and its signing live in `uplink/signed.py`, the wire contract the backend
(`uplink/backend/fleet.py`) shares:

    {"payload": "<base64 of the UTF-8 JSON command>", "sig": "<base64 Ed25519 signature of those bytes>"}

The device checks, in order: size, shape, a configured key, the signature, the device id, the time
window (expired, too far ahead, not yet valid), and the nonce against a replay cache persisted in the
state dir (entries live until their command expires, so a restart does not reopen the window). A lost
or corrupt cache fails closed: a durable high-water mark refuses commands issued before it (see
`ReplayCache`). Every rejection is answered with a reason and counted. Commands (args):

    start {}              stop {}                  reboot-service {}
    config set {"key": "capture.fps", "value": 15}
    policy update {"policy": "<policy TOML text>"}
    model update {"card": "<model card TOML; file = a plain file name>", "model": "<base64 ONNX>"}

They run through the same command layer as the console (`device.control`); work happens on one worker
thread, never on the MQTT thread.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from capture.config import ConfigError
from device.configfile import atomic_write
from device.configset import set_config
from device.control import Controller, Session
from device.model_update import ModelUpdater
from uplink.signed import COMMANDS, Rejected, load_public_key, open_envelope, parse_envelope, sign_command

log = logging.getLogger("crowdcap.downlink")

__all__ = ["COMMANDS", "Downlink", "Rejected", "ReplayCache", "Verifier", "load_public_key", "sign_command"]

_MAX_REPLAY_ENTRIES = 10000


class ReplayCache:
    """Nonces seen, each kept until its command expires; persisted atomically in `path`.

    Fails closed when the cache is lost: every accepted command first advances a high-water mark
    (the latest `issued_at` and `expires_at` accepted), written atomically to a separate small file
    (`<path>.highwater`) before the cache itself. If the cache is then missing or corrupt while the
    mark exists, commands issued at or before the mark are refused (`replay_unknown`) until the last
    recorded command has expired — whether they were seen can no longer be told. A corrupt mark
    refuses every command issued before this start (for `max_ttl_s`). The refusal window is itself
    written to the mark, so a restart does not reopen it.
    """

    def __init__(self, path: Path, *, max_ttl_s: float = 86400.0, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.mark_path = path.with_name(path.name + ".highwater")
        self._seen: dict[str, float] = {}
        self._mark: dict[str, float] = {"issued_at": 0.0, "expires_at": 0.0}
        now = clock()
        cache_lost = ""
        try:
            data = json.loads(path.read_text())
            self._seen = {str(k): float(v) for k, v in data.items()}
        except FileNotFoundError:
            cache_lost = "missing"
        except (OSError, ValueError, AttributeError, TypeError, RecursionError):
            cache_lost = "unreadable"
        try:
            mark = json.loads(self.mark_path.read_text())
            self._mark = {k: float(mark[k]) for k in ("issued_at", "expires_at")}
            for k in ("refuse_issued_upto", "refuse_until"):
                if k in mark:
                    self._mark[k] = float(mark[k])
        except FileNotFoundError:
            if cache_lost == "unreadable":  # no mark to go by: nothing issued before now is trusted
                self._refuse(now, now + max_ttl_s, f"replay cache {path} unreadable and no high-water mark")
        except (OSError, ValueError, AttributeError, TypeError, KeyError, RecursionError):
            self._refuse(now, now + max_ttl_s, f"replay high-water mark {self.mark_path} unreadable")
        else:
            if cache_lost and self._mark["expires_at"] >= now:
                self._refuse(self._mark["issued_at"], self._mark["expires_at"], f"replay cache {path} {cache_lost}")

    @property
    def refusing(self) -> dict[str, float]:
        """The refusal window after a lost cache ({} when none)."""
        if "refuse_until" not in self._mark:
            return {}
        return {"issued_upto": self._mark["refuse_issued_upto"], "until": self._mark["refuse_until"]}

    def _refuse(self, issued_upto: float, until: float, why: str) -> None:
        self._mark["refuse_issued_upto"] = max(issued_upto, self._mark.get("refuse_issued_upto", 0.0))
        self._mark["refuse_until"] = max(until, self._mark.get("refuse_until", 0.0))
        self._mark["issued_at"] = max(self._mark["issued_at"], issued_upto)
        self._mark["expires_at"] = max(self._mark["expires_at"], until)
        log.error("%s: downlink commands issued up to %s are refused until %s (replays cannot be ruled out)",
                  why, _utc(self._mark["refuse_issued_upto"]), _utc(self._mark["refuse_until"]))
        try:
            atomic_write(self.mark_path, json.dumps(self._mark).encode(), 0o600)
        except OSError as e:  # still refused in this process; said loudly
            log.error("replay high-water mark %s not written: %s", self.mark_path, e)

    def check_and_add(self, nonce: str, expires_at: float, now: float, issued_at: float | None = None) -> None:
        issued = now if issued_at is None else issued_at
        refuse_until = self._mark.get("refuse_until", 0.0)
        if refuse_until and now <= refuse_until and issued <= self._mark["refuse_issued_upto"]:
            raise Rejected("replay_unknown", f"the replay cache was lost; commands issued up to "
                                             f"{_utc(self._mark['refuse_issued_upto'])} are refused until "
                                             f"{_utc(refuse_until)}: re-sign it")
        self._seen = {n: e for n, e in self._seen.items() if e >= now}
        if nonce in self._seen:
            raise Rejected("replayed", "this nonce was already used")
        if len(self._seen) >= _MAX_REPLAY_ENTRIES:
            raise Rejected("replay_cache_full", "too many unexpired commands; retry later")
        mark = dict(self._mark)
        mark["issued_at"] = max(mark["issued_at"], issued)
        mark["expires_at"] = max(mark["expires_at"], expires_at)
        if refuse_until and now > refuse_until:
            mark.pop("refuse_issued_upto", None)
            mark.pop("refuse_until", None)
        atomic_write(self.mark_path, json.dumps(mark).encode(), 0o600)  # the mark first: it must cover the cache
        self._mark = mark
        self._seen[nonce] = expires_at
        atomic_write(self.path, json.dumps(self._seen).encode(), 0o600)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Verifier:
    def __init__(self, public_key: str, device_id: str, replay: ReplayCache, *, max_ttl_s: float,
                 clock_skew_s: float, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        try:
            self.key: Ed25519PublicKey | None = load_public_key(public_key)
            self.key_error = ""
        except ValueError as e:
            self.key, self.key_error = None, str(e)
        self.device_id = device_id
        self.replay = replay
        self.max_ttl_s, self.clock_skew_s, self.max_bytes = max_ttl_s, clock_skew_s, max_bytes
        self.clock = clock

    def verify(self, raw: bytes) -> dict[str, Any]:
        """The verified command, or Rejected with a reason."""
        outer = parse_envelope(raw, self.max_bytes)
        if self.key is None:
            raise Rejected("no_key", self.key_error)
        cmd = open_envelope(outer, self.key)
        if cmd["device_id"] != self.device_id:
            raise Rejected("wrong_device", f"command is for {cmd['device_id']!r}")
        if not 8 <= len(cmd["nonce"]) <= 128:
            raise Rejected("malformed", "nonce: expected 8-128 characters")
        now = self.clock()
        if cmd["expires_at"] < now:
            raise Rejected("expired", f"expired {now - cmd['expires_at']:.0f} s ago")
        if cmd["issued_at"] > now + self.clock_skew_s:
            raise Rejected("not_yet_valid", f"issued {cmd['issued_at'] - now:.0f} s in the future")
        if cmd["expires_at"] - now > self.max_ttl_s:
            raise Rejected("expiry_too_far", f"expires in {cmd['expires_at'] - now:.0f} s > {self.max_ttl_s:.0f} s")
        self.replay.check_and_add(cmd["nonce"], float(cmd["expires_at"]), now, float(cmd["issued_at"]))
        return cmd


class Downlink:
    """Verifies and executes downlink commands; results go to the uplink's cmd/result topic.

    `attach()` subscribes through the uplink stage; `handle(raw)` is the whole path, synchronously
    (tests and tools); `close()` stops the worker."""

    def __init__(self, service: Any, controller: Controller, *, clock: Callable[[], float] = time.time,
                 model_updater: Any = None) -> None:
        self.service = service
        self.controller = controller
        self._clock = clock
        self._replay = ReplayCache(Path(service.config.device.state_dir) / "downlink-nonces.json",
                                   max_ttl_s=service.config.downlink.max_ttl_s, clock=clock)
        self._configure()
        self.models = model_updater if model_updater is not None else ModelUpdater(service)
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.failed = 0
        self._session = Session(origin="downlink", authorized=True)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._thread: threading.Thread | None = None
        self._last_reject_publish = 0.0

    def _configure(self) -> None:
        d = self.service.config.downlink
        self.verifier = Verifier(d.public_key, self.service.device_id, self._replay, max_ttl_s=d.max_ttl_s,
                                 clock_skew_s=d.clock_skew_s, max_bytes=d.max_bytes, clock=self._clock)

    def attach(self) -> None:
        uplink = self.service.stages.get("uplink")
        if uplink is None or not hasattr(uplink, "on_command"):
            log.info("downlink: no uplink stage, commands are not received")
            return
        self._thread = threading.Thread(target=self._worker, name="downlink", daemon=True)
        self._thread.start()
        uplink.on_command(self.submit)

    def submit(self, raw: bytes) -> None:
        """From the MQTT thread: queue it (bounded) and return at once."""
        try:
            self._queue.put_nowait(bytes(raw))
        except queue.Full:
            self._reject(None, Rejected("busy", "too many commands queued"))

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5.0)

    def status(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "failed": self.failed, "rejected": dict(self.rejected),
                "key": "configured" if self.verifier.key is not None else self.verifier.key_error,
                **({"replay_refusing": self._replay.refusing} if self._replay.refusing else {})}

    def _worker(self) -> None:
        while True:
            raw = self._queue.get()
            if raw is None:
                return
            try:
                self.handle(raw)
            except Exception as e:  # never let one command kill the worker
                log.error("downlink: %s: %s", type(e).__name__, e)

    def handle(self, raw: bytes) -> dict[str, Any]:
        try:
            cmd = self.verifier.verify(raw)
        except Rejected as e:
            return self._reject(None, e)
        name = cmd["cmd"]
        base = {"id": cmd.get("id"), "nonce": cmd["nonce"], "cmd": name}
        if name not in COMMANDS:
            return self._reject(base, Rejected("unknown_command", f"{name!r}; known: {', '.join(COMMANDS)}"))
        log.info("downlink: %s (id %s)", name, base["id"])
        try:
            ok, data = self._execute(name, cmd["args"])
        except Rejected as e:
            return self._reject(base, e)
        except (ConfigError, ValueError) as e:
            ok, data = False, {"error": str(e)}
        self.accepted += 1
        if not ok:
            self.failed += 1
        result = {**base, "ok": ok, **({"result": data} if ok else {"reason": "failed", "detail": data.get("error")})}
        self._publish(result)
        return result

    def _execute(self, name: str, args: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        if name == "config set":
            key, value = args.get("key"), args.get("value")
            if not isinstance(key, str) or value is None:
                raise Rejected("malformed", 'config set: expected args {"key": str, "value": ...}')
            if key == "redact.policy":  # layered policy: the fleet cannot replace or remove the wearer's layer
                raise Rejected("forbidden", "redact.policy is the wearer's policy layer; the fleet's layer is "
                                            "`policy update`")
            with self.controller.lock:
                result = set_config(self.service, key, value)
            if key.startswith("downlink."):  # key rotation and limits take effect for the next command
                self._configure()
            return True, result
        if name == "policy update":
            if not isinstance(args.get("policy"), str):
                raise Rejected("malformed", 'policy update: expected args {"policy": TOML text}')
            argv = ["privacy", "update", args["policy"]]
        elif name == "model update":
            card, model = args.get("card"), args.get("model")
            if not isinstance(card, str) or not isinstance(model, str):
                raise Rejected("malformed", 'model update: expected args {"card": TOML, "model": base64}')
            try:
                blob = base64.b64decode(model, validate=True)
            except ValueError:
                raise Rejected("malformed", "model: not base64") from None
            with self.controller.lock:
                return self.models.update(card, blob)
        else:
            argv = {"start": ["start"], "stop": ["stop"], "reboot-service": ["restart"]}[name]
        reply = self.controller.execute(argv, self._session)
        return reply.ok, reply.data

    def _reject(self, base: dict[str, Any] | None, e: Rejected) -> dict[str, Any]:
        self.rejected[e.reason] += 1
        log.warning("downlink: rejected (%s) %s", e.reason, e.detail)
        result = {**(base or {"id": None, "nonce": None, "cmd": None}), "ok": False, "reason": e.reason,
                  "detail": e.detail}
        now = time.monotonic()
        # signed commands always get an answer; a flood of junk must not become a flood of results
        if base is not None or now - self._last_reject_publish >= 1.0:
            self._last_reject_publish = now
            self._publish(result)
        return result

    def _publish(self, result: dict[str, Any]) -> None:
        uplink = self.service.stages.get("uplink")
        publish = getattr(uplink, "publish_command_result", None)
        if publish is not None:
            try:
                publish(result)
            except Exception as e:
                log.warning("downlink: result not published: %s", e)
