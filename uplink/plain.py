"""`status` and `telemetry` as plain JSON payloads: readable by mosquitto_sub, Home Assistant, Node-RED.

    data = plain.encode("status", device_id, session_id, seq, time.time(), {"state": "online", ...})
    payload = plain.for_sending(data, message_id, historical)   # telemetry from the spool: adds "id"
    msg, message_id = plain.decode(topic_kind, topic_device, payload)  # ingest: a wire.Message (+ id)

One JSON object per MQTT payload (no chunk, no binary envelope), UTF-8:
`{"v": 1, "type": "status"|"telemetry", "device_id", "session_id", "seq", "t_utc", ...payload}`;
spooled telemetry also carries `"id"` (32 hex digits: the message id the ingest confirms, see the
ack section of docs/wire-format.md), `"historical": true` when sent from the backlog and, on a device
with a signing key, `"sig"`: 128 hex digits, the Ed25519 signature over
`b"crowdcap-plain-v1\0" + message id + the JSON as spooled` (the payload without these three keys,
which the sender appends in this order just before the closing brace). An ingest with a device
registry confirms only telemetry whose signature verifies (a forger must not confirm real records). Payload keys
sit at the top level (Home Assistant: `value_template: "{{ value_json.state }}"`); the envelope keys
above win over payload keys of the same name. Frames, clouds, events and command results keep the
binary envelope.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from uplink import wire
from uplink.wire import WireError

VERSION = 1
KINDS = {"status": wire.STATUS, "telemetry": wire.TELEMETRY}
ENVELOPE = ("v", "type", "device_id", "session_id", "seq", "t_utc", "id", "historical", "sig")


def encode(kind: str, device_id: str, session_id: str, seq: int, t_utc: float, payload: dict[str, Any]) -> bytes:
    if kind not in KINDS:
        raise ValueError(f"kind: expected status or telemetry, got {kind!r}")
    body = {"v": VERSION, "type": kind, "device_id": device_id, "session_id": session_id, "seq": seq,
            "t_utc": round(t_utc, 6)}
    body.update({k: v for k, v in payload.items() if k not in body})
    return wire.json_bytes(body)


_SIG_DOMAIN = b"crowdcap-plain-v1\0"
_TAIL = re.compile(rb',"id":"([0-9a-f]{32})"(,"historical":true)?(?:,"sig":"([0-9a-f]{128})")?}$')


def signed_bytes(message_id: bytes, data: bytes) -> bytes:
    return _SIG_DOMAIN + message_id + data


def for_sending(data: bytes, message_id: bytes, historical: bool,
                signer: Callable[[bytes], bytes] | None = None) -> bytes:
    """The spooled JSON with its message id, the backlog flag and the signature spliced in (no
    re-encoding)."""
    extra = f',"id":"{message_id.hex()}"' + (',"historical":true' if historical else "")
    if signer is not None:
        extra += f',"sig":"{signer(signed_bytes(message_id, data)).hex()}"'
    return data[:-1] + extra.encode() + b"}"


def signature_of(payload: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(JSON as spooled, message id, signature) of a signed payload, else None."""
    m = _TAIL.search(payload)
    if m is None or m.group(3) is None:
        return None
    return payload[:m.start()] + b"}", bytes.fromhex(m.group(1).decode()), bytes.fromhex(m.group(3).decode())


def decode(kind: str, device_id: str, payload: bytes,
           limits: wire.Limits = wire.DEFAULT_LIMITS) -> tuple[wire.Message, bytes | None]:
    """A plain JSON status/telemetry payload as a wire.Message (meta = the payload fields) and its
    message id (None for status: latest value, never confirmed). WireError naming what is wrong."""
    if len(payload) > limits.max_json:
        raise WireError("json_too_large", f"{len(payload)} bytes")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise WireError("bad_json", str(e)) from None
    if not isinstance(body, dict):
        raise WireError("bad_json", "not a JSON object")
    if body.get("v") != VERSION:
        raise WireError("bad_version", f"plain JSON v={body.get('v')!r}")
    if body.get("type") != kind:
        raise WireError("bad_type", f"{body.get('type')!r} on the {kind} topic")
    if body.get("device_id") != device_id:
        raise WireError("topic_mismatch", f"{body.get('device_id')!r} on {device_id!r}'s topic")
    seq, t, session = body.get("seq"), body.get("t_utc"), body.get("session_id")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63:
        raise WireError("bad_json", f"seq: expected an integer >= 0, got {seq!r}")
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t) or abs(t) > 2**62 / 1e9:
        raise WireError("bad_json", f"t_utc: expected seconds since the epoch, got {t!r}")
    if not isinstance(session, str) or not session:
        raise WireError("bad_json", f"session_id: expected a string, got {session!r}")
    message_id = None
    if (mid := body.get("id")) is not None:
        try:
            message_id = bytes.fromhex(mid) if isinstance(mid, str) and len(mid) == 32 else None
        except ValueError:
            message_id = None
        if message_id is None:
            raise WireError("bad_json", f"id: expected 32 hex digits, got {mid!r}")
    meta = {k: v for k, v in body.items() if k not in ENVELOPE}
    flags = wire.FLAG_HISTORICAL if body.get("historical") is True else 0
    msg = wire.Message(KINDS[kind], device_id, session, seq, int(t * 1e9), flags=flags,
                       sections={wire.SEC_META: wire.json_bytes(meta)})
    return msg, message_id
