"""The spool's on-disk formats: CRC-framed records in segment files, CRC-framed entries in `.ack` files.

    record = magic "CCSR" | payload length u32 | id u64 | priority u8 | kind u8 | flags u16 | CRC32C u32 | payload
             (the CRC covers the header before it and the payload)
    ack    = id u64 | reason u8 (0 delivered, 1 evicted, 2 lost to corruption, 3 taken back) | CRC32C u32 of the 9 bytes before it

Recovery resyncs: a record whose header or CRC is bad is skipped up to the next offset holding a valid
record (magic, sane length, matching CRC), so one flipped byte costs the records it touches, not the
rest of the segment.
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


def _valid_at(data: bytes, pos: int) -> tuple[int, int, int, int, int] | None:
    """(id, priority, kind, flags, length) of a whole, CRC-valid record at `pos`, else None."""
    if pos + RECORD.size > len(data):
        return None
    magic, length, rid, prio, kind, flags, crc = RECORD.unpack_from(data, pos)
    end = pos + RECORD.size + length
    if magic != MAGIC or length > MAX_RECORD or end > len(data):
        return None
    c = google_crc32c.value(data[pos:pos + RECORD.size - 4])
    if google_crc32c.extend(c, data[pos + RECORD.size:end]) != crc:
        return None
    return rid, prio, kind, flags, length


def scan(path: Path) -> tuple[list[tuple[int, int, int, int, int, int]], int, list[tuple[int, int]]]:
    """([(id, priority, kind, flags, payload length, payload offset)], end of the last valid record,
    [(start, end) of each corrupt span followed by a valid record]).

    A bad record (bad magic, length or CRC) is skipped by searching forward for the next magic that
    starts a valid record. What follows the last valid record is a torn tail (the caller cuts it)."""
    data = path.read_bytes()
    out: list[tuple[int, int, int, int, int, int]] = []
    holes: list[tuple[int, int]] = []
    pos = valid_end = 0
    while pos < len(data):
        got = _valid_at(data, pos)
        if got is None:
            nxt = data.find(MAGIC, pos + 1)
            while nxt != -1 and _valid_at(data, nxt) is None:
                nxt = data.find(MAGIC, nxt + 1)
            if nxt == -1:
                break
            holes.append((pos, nxt))
            pos = nxt
            continue
        rid, prio, kind, flags, length = got
        out.append((rid, prio, kind, flags, length, pos + RECORD.size))
        pos += RECORD.size + length
        valid_end = pos
    return out, valid_end, holes
