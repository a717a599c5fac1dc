"""The crowdcap wire format v1: one module for the device (encode) and the backend (decode).

Layout (big-endian; the full contract with field tables is docs/wire-format.md):

    message = envelope header (36 B) | device id | session id | body
    body    = sections: tag u8 | length u32 | bytes     (meta JSON, manifest JSON, color, depth, points, colors)
    chunk   = chunk header (36 B) | slice of the message  (what one MQTT payload carries)

Decoding never trusts a length: every size is checked against the bytes present and against limits
(`Limits`) before anything is allocated or decompressed. Every failure is `WireError(reason)` with a
short machine-readable `reason` the ingest counts by. JSON sections deeper than `Limits.max_json_depth`
are refused (`json_too_deep`) before the parser could recurse.

Signed chunks (wire v1.1): a chunk with `CHUNK_SIGNED` in its flags carries a message followed by a
64-byte Ed25519 signature over `signed_bytes(message_id, message)` (message id, envelope header with
the historical bit masked — it is set at send time — device id, session id; the header holds the body
CRC). `chunks(..., signer=)` appends it; `split_signature` takes it off again at the receiver.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
import numpy as np

from capture.configcore import InputError

MAGIC = b"CCAP"
CHUNK_MAGIC = b"CCCH"
VERSION = 1

# message types
FRAME, CLOUD, STATUS, TELEMETRY, EVENT, CMD_RESULT = 1, 2, 3, 4, 5, 6
TYPE_NAMES = {FRAME: "frame", CLOUD: "cloud", STATUS: "status", TELEMETRY: "telemetry", EVENT: "event",
              CMD_RESULT: "cmd_result"}
TYPE_BY_NAME = {v: k for k, v in TYPE_NAMES.items()}

# envelope flags
FLAG_HISTORICAL = 0x01  # replayed from the store-and-forward backlog, not live (Sparkplug is_historical)
FLAG_KEYFRAME = 0x02
FLAG_DEGRADED = 0x04  # encoded at reduced quality by the bandwidth policy

# color codec ids
COLOR_NONE, COLOR_JPEG = 0, 1
DEPTH_NONE = 255  # "no depth section"; other ids are depth.codec wire ids

# body section tags
SEC_META, SEC_MANIFEST, SEC_COLOR, SEC_DEPTH, SEC_POINTS, SEC_COLORS = 1, 2, 3, 4, 5, 6

_HEADER = struct.Struct(">4sBBHQqBBBBII")  # magic ver type flags seq t_ns color depth devlen seslen bodylen crc
_CHUNK = struct.Struct(">4sBBH16sIII")  # magic ver flags reserved msgid index count total
_SECTION = struct.Struct(">BI")
HEADER_SIZE = _HEADER.size
CHUNK_HEADER_SIZE = _CHUNK.size
_FLAGS_OFFSET = 6  # byte offset of the flags field in the envelope header

# chunk flags
CHUNK_SIGNED = 0x01  # the reassembled payload is message | 64-byte Ed25519 signature (wire v1.1)
SIGNATURE_SIZE = 64
_SIG_DOMAIN = b"crowdcap-sig/1\0"


class WireError(InputError):
    """A payload is not a valid crowdcap v1 message; `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """What a decoder accepts; anything larger is refused before allocation."""

    max_message: int = 64 * 1024 * 1024
    max_chunks: int = 4096
    max_pixels: int = 4096 * 4096
    max_points: int = 4_000_000
    max_json: int = 1024 * 1024
    max_json_depth: int = 32


DEFAULT_LIMITS = Limits()


@dataclass
class Message:
    """A decoded (or to-be-encoded) message. `sections` maps tag -> bytes."""

    type: int
    device_id: str
    session_id: str
    seq: int
    t_capture_ns: int
    flags: int = 0
    color_codec: int = COLOR_NONE
    depth_codec: int = DEPTH_NONE
    sections: dict[int, bytes] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return TYPE_NAMES.get(self.type, f"type{self.type}")

    @property
    def historical(self) -> bool:
        return bool(self.flags & FLAG_HISTORICAL)

    def json_section(self, tag: int, limits: Limits = DEFAULT_LIMITS) -> Any:
        data = self.sections.get(tag)
        if data is None:
            return None
        if len(data) > limits.max_json:
            raise WireError("json_too_large", f"section {tag}: {len(data)} bytes")
        try:  # the C parser refuses a hostile [[[[... at ~1000 levels (RecursionError) at once
            obj = json.loads(data)
        except RecursionError:
            raise WireError("json_too_deep", f"section {tag}: nested deeper than {limits.max_json_depth}") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise WireError("bad_json", f"section {tag}: {str(e)[:200]}") from None
        if data.count(b"[") + data.count(b"{") > limits.max_json_depth and \
                json_depth(data, limits.max_json_depth) > limits.max_json_depth:
            raise WireError("json_too_deep", f"section {tag}: nested deeper than {limits.max_json_depth}")
        return obj

    def meta(self, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
        m = self.json_section(SEC_META, limits)
        if not isinstance(m, dict):
            raise WireError("bad_meta", "meta section missing or not an object")
        return m


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def json_depth(data: bytes, stop_above: int | None = None) -> int:
    """The deepest nesting of [ and { in JSON text (strings skipped), measured without recursion, so a
    hostile `[[[[...` is refused before the parser could overflow its stack. With `stop_above`, returns
    as soon as the depth exceeds it (a hostile 400 KB section costs one block, not the whole scan)."""
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if len(brackets) <= 2 * DEFAULT_LIMITS.max_json_depth:
        return len(brackets) // 2  # an upper bound, good enough below the limit
    b = np.frombuffer(brackets, dtype=np.uint8)
    depth = deepest = 0
    for start in range(0, len(b), 8192):
        block = b[start:start + 8192]
        level = depth + np.cumsum(np.where((block == 0x5B) | (block == 0x7B), 1, -1), dtype=np.int64)
        deepest = max(deepest, int(level.max()))
        depth = int(level[-1])
        if stop_above is not None and deepest > stop_above:
            break
    return deepest


def crc32c(data: bytes | memoryview) -> int:
    return google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)


def _ident(s: str, what: str) -> bytes:
    b = s.encode()
    if not 0 < len(b) <= 255:
        raise ValueError(f"{what}: expected 1-255 UTF-8 bytes, got {len(b)}")
    return b


def encode(msg: Message) -> bytes:
    """The whole message (envelope + body) as bytes; CRC32C covers the body."""
    parts = []
    for tag in sorted(msg.sections):
        data = msg.sections[tag]
        parts.append(_SECTION.pack(tag, len(data)))
        parts.append(data)
    body = b"".join(parts)
    dev, ses = _ident(msg.device_id, "device_id"), _ident(msg.session_id, "session_id")
    header = _HEADER.pack(MAGIC, VERSION, msg.type, msg.flags, msg.seq, msg.t_capture_ns, msg.color_codec,
                          msg.depth_codec, len(dev), len(ses), len(body), crc32c(body))
    return b"".join((header, dev, ses, body))


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Parse and verify one whole message; WireError on anything malformed."""
    if len(data) < HEADER_SIZE:
        raise WireError("truncated", f"{len(data)} bytes < header")
    (magic, version, mtype, flags, seq, t_ns, color_codec, depth_codec, dlen, slen, blen,
     crc) = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError("bad_magic")
    if version != VERSION:
        raise WireError("bad_version", f"version {version}")
    if mtype not in TYPE_NAMES:
        raise WireError("bad_type", f"type {mtype}")
    if blen > limits.max_message:
        raise WireError("too_large", f"body {blen} bytes")
    end = HEADER_SIZE + dlen + slen + blen
    if len(data) != end:
        raise WireError("truncated" if len(data) < end else "trailing_bytes", f"{len(data)} != {end}")
    try:
        device_id = bytes(data[HEADER_SIZE:HEADER_SIZE + dlen]).decode()
        session_id = bytes(data[HEADER_SIZE + dlen:HEADER_SIZE + dlen + slen]).decode()
    except UnicodeDecodeError:
        raise WireError("bad_ident") from None
    if not device_id or not session_id or "/" in device_id or "+" in device_id or "#" in device_id:
        raise WireError("bad_ident", f"{device_id!r}/{session_id!r}")
    body = memoryview(data)[HEADER_SIZE + dlen + slen:]
    if crc32c(body) != crc:
        raise WireError("bad_crc")
    sections: dict[int, bytes] = {}
    pos = 0
    while pos < blen:
        if blen - pos < _SECTION.size:
            raise WireError("bad_section", "truncated section header")
        tag, length = _SECTION.unpack_from(body, pos)
        pos += _SECTION.size
        if length > blen - pos or tag in sections:
            raise WireError("bad_section", f"tag {tag} length {length}")
        sections[tag] = bytes(body[pos:pos + length])
        pos += length
    return Message(mtype, device_id, session_id, seq, t_ns, flags, color_codec, depth_codec, sections)


def set_flags(message: bytes, flags: int) -> bytes:
    """A copy of an encoded message with its envelope flags replaced (the CRC covers only the body)."""
    return message[:_FLAGS_OFFSET] + struct.pack(">H", flags) + message[_FLAGS_OFFSET + 2:]


def peek_flags(message: bytes) -> int:
    return struct.unpack_from(">H", message, _FLAGS_OFFSET)[0]


# ---- chunking -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    message_id: bytes
    index: int
    count: int
    total: int
    data: bytes
    flags: int = 0

    @property
    def signed(self) -> bool:
        return bool(self.flags & CHUNK_SIGNED)


def chunk_count(total: int, max_payload: int) -> int:
    per = max_payload - CHUNK_HEADER_SIZE
    if per <= 0:
        raise ValueError(f"max_payload: expected > {CHUNK_HEADER_SIZE} bytes, got {max_payload}")
    return max(1, math.ceil(total / per))


def signed_bytes(message_id: bytes, message: bytes | memoryview) -> bytes:
    """What a device signs: domain tag, message id, the envelope header (with the historical bit
    masked: the sender sets it at send time) — which holds type, seq, time, lengths and the body
    CRC — then device id and session id. The body is covered through its CRC32C."""
    if len(message) < HEADER_SIZE:
        raise WireError("truncated", f"{len(message)} bytes < header")
    dlen, slen = message[26], message[27]
    head = bytearray(message[:HEADER_SIZE + dlen + slen])
    head[_FLAGS_OFFSET + 1] &= ~FLAG_HISTORICAL & 0xFF
    return b"".join((_SIG_DOMAIN, message_id, head))


def chunks(message: bytes, message_id: bytes, max_payload: int,
           signer: Callable[[bytes], bytes] | None = None) -> list[bytes]:
    """Split `message` into MQTT payloads of at most `max_payload` bytes, each with a chunk header.
    With `signer` (data -> 64-byte Ed25519 signature) the message carries its signature (wire v1.1)."""
    if len(message_id) != 16:
        raise ValueError("message_id: expected 16 bytes")
    flags = 0
    if signer is not None:
        sig = signer(signed_bytes(message_id, message))
        if len(sig) != SIGNATURE_SIZE:
            raise ValueError(f"signer: expected a {SIGNATURE_SIZE}-byte signature, got {len(sig)}")
        message, flags = b"".join((message, sig)), CHUNK_SIGNED
    per = max_payload - CHUNK_HEADER_SIZE
    count = chunk_count(len(message), max_payload)
    view = memoryview(message)  # one copy per chunk (header + slice), not two
    return [b"".join((_CHUNK.pack(CHUNK_MAGIC, VERSION, flags, 0, message_id, i, count, len(message)),
                      view[i * per:(i + 1) * per])) for i in range(count)]


def split_signature(data: bytes, signed: bool) -> tuple[bytes, bytes | None]:
    """(message, signature or None) of a reassembled payload whose chunks had `CHUNK_SIGNED` or not."""
    if not signed:
        return data, None
    if len(data) < HEADER_SIZE + SIGNATURE_SIZE:
        raise WireError("truncated", f"signed payload of {len(data)} bytes")
    return data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]


def set_chunk0_flags(chunk0: bytes, flags: int) -> bytes:
    """Chunk 0 of a message with the envelope flags replaced (no copy of the rest of the message)."""
    off = CHUNK_HEADER_SIZE + _FLAGS_OFFSET
    if len(chunk0) < off + 2:
        raise ValueError("chunk 0 too short to hold the envelope header")
    return b"".join((memoryview(chunk0)[:off], struct.pack(">H", flags), memoryview(chunk0)[off + 2:]))


def peek_chunk0_flags(chunk0: bytes) -> int:
    return struct.unpack_from(">H", chunk0, CHUNK_HEADER_SIZE + _FLAGS_OFFSET)[0]


def single_chunk(message: bytes, signer: Callable[[bytes], bytes] | None = None) -> bytes:
    """A small message as one MQTT payload (status, last will) under a fresh random message id."""
    import os

    extra = SIGNATURE_SIZE if signer is not None else 0
    return chunks(message, os.urandom(16), len(message) + extra + CHUNK_HEADER_SIZE, signer)[0]


def parse_chunk(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> Chunk:
    """The chunk header checked for sanity (count, index, total within limits and consistent)."""
    if len(payload) < CHUNK_HEADER_SIZE:
        raise WireError("truncated", f"chunk of {len(payload)} bytes")
    magic, version, flags, _res, mid, index, count, total = _CHUNK.unpack_from(payload)
    if magic != CHUNK_MAGIC:
        raise WireError("bad_magic", "chunk")
    if version != VERSION:
        raise WireError("bad_version", f"chunk version {version}")
    if count == 0 or count > limits.max_chunks:
        raise WireError("bad_chunk_count", f"{count}")
    if index >= count:
        raise WireError("bad_chunk_index", f"{index} of {count}")
    if total == 0 or total > limits.max_message:
        raise WireError("too_large", f"total {total}")
    data = payload[CHUNK_HEADER_SIZE:]
    if not data or len(data) > total or count > total:
        raise WireError("bad_chunk_size", f"{len(data)} bytes of {total}")
    return Chunk(mid, index, count, total, data, flags)


# ---- typed section helpers ---------------------------------------------------------------------


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=_json_default).encode()


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, bytes | bytearray):
        return o.hex()
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    return str(o)


def points_from_section(data: bytes, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    if len(data) % 12 or len(data) // 12 > limits.max_points:
        raise WireError("bad_cloud", f"points section of {len(data)} bytes")
    return np.frombuffer(data, dtype="<f4").reshape(-1, 3)


def colors_from_section(data: bytes, n: int) -> np.ndarray:
    if len(data) != 3 * n:
        raise WireError("bad_cloud", f"colors section of {len(data)} bytes for {n} points")
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, 3)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's SOF marker without decoding; WireError if not a JPEG."""
    if data[:2] != b"\xff\xd8":
        raise WireError("bad_color", "not a JPEG")
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise WireError("bad_color", "corrupt JPEG markers")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        length = struct.unpack_from(">H", data, pos + 2)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > n:
                break
            h, w = struct.unpack_from(">HH", data, pos + 5)
            return w, h
        pos += 2 + length
    raise WireError("bad_color", "JPEG without a frame header")
