"""The downlink's wire contract: signed commands on `crowdcap/v1/<device_id>/cmd`.

Both ends import this module — the backend signs (`uplink/backend/fleet.py`), the device opens and
checks (`device/downlink.py`) — so neither imports the other. A command message is JSON:

    {"payload": "<base64 of the UTF-8 JSON command>", "sig": "<base64 Ed25519 signature of those bytes>"}

and the signed command is

    {"v": 1, "device_id": "...", "id": "req-42", "cmd": "config set", "args": {...},
     "nonce": "<8-128 chars>", "issued_at": <unix s>, "expires_at": <unix s>}

Signing the exact payload bytes avoids any canonical-JSON ambiguity.

    sign_command(key, device_id, cmd, args, ttl_s=...) -> bytes     the message the backend publishes
    load_public_key(text)                             -> the devices' `downlink.public_key`
    parse_envelope(raw, max_bytes) -> outer dict      size, JSON, shape, a signature present
    open_envelope(outer, key)      -> command dict    base64, signature, payload JSON, v 1, field types

Every refusal is `Rejected(reason, detail)`; the device adds who it is for, the time window and the
replay cache (`device.downlink.Verifier`), which are policy, not layout.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

COMMANDS = ("start", "stop", "config set", "policy update", "model update", "reboot-service")


class Rejected(Exception):
    """A command refused for `reason` (a short counter name); `detail` says what to fix."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def load_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from base64 of its 32 raw bytes, or PEM; ValueError naming the problem."""
    text = text.strip()
    if not text:
        raise ValueError("downlink.public_key: not configured")
    if text.startswith("-----BEGIN"):
        key = load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("downlink.public_key: PEM key is not Ed25519")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError("downlink.public_key: expected base64 of 32 bytes or a PEM block") from None
    if len(raw) != 32:
        raise ValueError(f"downlink.public_key: expected 32 raw bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign_command(key: Ed25519PrivateKey, device_id: str, cmd: str, args: dict[str, Any] | None = None, *,
                 ttl_s: float = 300.0, nonce: str | None = None, now: float | None = None,
                 request_id: str = "") -> bytes:
    """The message the backend publishes (also what tests and tools use)."""
    now = time.time() if now is None else now
    payload = json.dumps({"v": 1, "device_id": device_id, "id": request_id or secrets.token_hex(6), "cmd": cmd,
                          "args": args or {}, "nonce": nonce or secrets.token_hex(16), "issued_at": now,
                          "expires_at": now + ttl_s}, separators=(",", ":")).encode()
    return json.dumps({"payload": base64.b64encode(payload).decode(),
                       "sig": base64.b64encode(key.sign(payload)).decode()}).encode()


def parse_envelope(raw: bytes, max_bytes: int) -> dict[str, Any]:
    """The outer `{"payload", "sig"}` object of a message, checked for size and shape only."""
    if len(raw) > max_bytes:
        raise Rejected("too_large", f"{len(raw)} bytes > {max_bytes}")
    try:
        outer = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Rejected("malformed", "not JSON") from None
    if not isinstance(outer, dict) or not isinstance(outer.get("payload"), str):
        raise Rejected("malformed", 'expected {"payload": base64, "sig": base64}')
    if not outer.get("sig"):
        raise Rejected("unsigned", "no signature")
    return outer


def open_envelope(outer: dict[str, Any], key: Ed25519PublicKey) -> dict[str, Any]:
    """The signed command inside `outer` (from `parse_envelope`), its signature checked against `key`
    and its fields typed; who it is for and when it is valid are the receiver's checks."""
    try:
        payload = base64.b64decode(outer["payload"], validate=True)
        sig = base64.b64decode(str(outer["sig"]), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise Rejected("malformed", "payload or sig is not base64") from None
    try:
        key.verify(sig, payload)
    except InvalidSignature:
        raise Rejected("bad_signature", "signature does not match the configured key") from None
    try:
        cmd = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Rejected("malformed", "signed payload is not JSON") from None
    if not isinstance(cmd, dict) or cmd.get("v") != 1:
        raise Rejected("malformed", "expected a version 1 command object")
    for name, kind in (("device_id", str), ("cmd", str), ("nonce", str), ("args", dict)):
        if not isinstance(cmd.get(name), kind):
            raise Rejected("malformed", f"{name}: expected a {kind.__name__}")
    for name in ("issued_at", "expires_at"):
        if isinstance(cmd.get(name), bool) or not isinstance(cmd.get(name), int | float):
            raise Rejected("malformed", f"{name}: expected a unix time in seconds")
    return cmd
