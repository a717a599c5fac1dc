"""The spool's on-disk formats: CRC-framed records in segment files, CRC-framed entries in `.ack` files.

    record = magic "CCSR" | payload length u32 | id u64 | priority u8 | kind u8 | flags u16 | CRC32C u32 | payload
             (the CRC covers the header before it and the payload)
    ack    = id u64 | reason u8 (0 delivered, 1 evicted) | CRC32C u32 of the 9 bytes before it
"""

from __future__ import annotations

import struct
from pathlib import Path

import google_crc32c

RECORD = struct.Struct(">4sIQBBHI")
ACK = struct.Struct(">QBI")
MAGIC = b"CCSR"
MAX_RECORD = 256 * 1024 * 1024


def record_parts(rid: int, priority: int, kind: int, flags: int, payload: bytes) -> list[bytes]:
    """The buffers to write (os.writev) for one record."""
    head = RECORD.pack(MAGIC, len(payload), rid, priority, kind, flags, 0)[:-4]
    crc = google_crc32c.extend(google_crc32c.value(head), payload)
    return [head, struct.pack(">I", crc), payload]


def ack_entry(rid: int, reason: int) -> bytes:
    entry = ACK.pack(rid, reason, 0)[:-4]
    return entry + struct.pack(">I", google_crc32c.value(entry))


def read_acks(path: Path) -> set[int]:
    """Ids in an ack file; a torn tail entry ends the list (those records are simply sent again)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set()
    ids = set()
    for off in range(0, len(data) - ACK.size + 1, ACK.size):
        rid, _reason, crc = ACK.unpack_from(data, off)
        if google_crc32c.value(data[off:off + ACK.size - 4]) != crc:
            break
        ids.add(rid)
    return ids


def scan(path: Path) -> tuple[list[tuple[int, int, int, int, int, int]], int]:
    """([(id, priority, kind, flags, payload length, payload offset)], end of the last valid record).

    Scanning stops at the first record that is short, has a bad magic/length or a bad CRC: that and
    everything after it is a torn tail."""
    out = []
    pos = 0
    with open(path, "rb") as f:
        while True:
            head = f.read(RECORD.size)
            if len(head) < RECORD.size:
                return out, pos
            magic, length, rid, prio, kind, flags, crc = RECORD.unpack(head)
            if magic != MAGIC or length > MAX_RECORD:
                return out, pos
            payload = f.read(length)
            if len(payload) < length or google_crc32c.value(head[:-4] + payload) != crc:
                return out, pos
            out.append((rid, prio, kind, flags, length, pos + RECORD.size))
            pos += RECORD.size + length
