"""Codec 3: an RVL-class codec (Wilson 2017), vectorised with numpy; decoding is safe on garbage.

Like RVL, the image (row-major) is split into alternating runs of zero and non-zero pixels; the
non-zero pixels are coded as zigzagged deltas from the previous non-zero pixel, and every number is a
4-bit varint (3 payload bits + a continuation bit), so small deltas on smooth surfaces cost one
nibble. Unlike RVL, run lengths and deltas are stored as two consecutive sections instead of
interleaved, which lets both encode and decode run as a few whole-array numpy passes.

Layout: uint32 LE R (number of zero/non-zero run pairs) | nibble stream: 2R run lengths
(zero, non-zero, zero, ...), then one delta per non-zero pixel; nibbles fill each byte low half
first; an odd count is padded with one 0 nibble.
"""

from __future__ import annotations

import numpy as np

from depth.codec import check_depth, check_size

_MAX_NIBBLES = 10  # 30 payload bits: any run length we accept (≤ 2^28 pixels) and any delta (< 2^17)


def _vle_encode(values: np.ndarray) -> np.ndarray:
    """Nibble varints of non-negative integers (uint32) → uint8 nibbles.

    One scatter per nibble position k: position k is written only for values that need > k nibbles,
    which on smooth depth is a small minority beyond k = 0.
    """
    counts = np.ones(values.shape, np.uint8)
    threshold = 8
    while threshold < 2**33:
        over = values >= threshold
        if not over.any():
            break
        counts += over
        threshold <<= 3
    if values.size == 0:
        return np.zeros(0, np.uint8)
    total = int(counts.sum())
    if total == values.size:  # all one nibble
        return values.astype(np.uint8)
    starts = np.cumsum(counts, dtype=np.int64) - counts
    out = np.empty(total, np.uint8)
    out[starts] = (values & 7).astype(np.uint8) | ((counts > 1).astype(np.uint8) << 3)
    for k in range(1, int(counts.max())):
        sel = np.flatnonzero(counts > k)
        v = values[sel]
        out[starts[sel] + k] = ((v >> (3 * k)) & 7).astype(np.uint8) | ((counts[sel] > k + 1).astype(np.uint8) << 3)
    return out


def _vle_decode(nib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nibbles → (values uint32, index of each value's last nibble)."""
    ends = np.flatnonzero(nib < 8)
    used = int(ends[-1]) + 1 if ends.size else 0
    if used != nib.size:
        raise ValueError("rvl: truncated data (a number runs past the end)")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    longest = int(lengths.max())
    if longest > _MAX_NIBBLES:
        raise ValueError("rvl: corrupt data (a number longer than 30 bits)")
    values = (nib[starts] & 7).astype(np.uint32)
    for k in range(1, longest):
        sel = np.flatnonzero(lengths > k)
        values[sel] |= (nib[starts[sel] + k] & 7).astype(np.uint32) << np.uint32(3 * k)
    return values, ends


class RvlCodec:
    name = "rvl"
    codec_id = 3

    def encode(self, depth: np.ndarray) -> bytes:
        flat = check_depth(depth).reshape(-1)
        valid = flat != 0
        change = np.flatnonzero(valid[1:] != valid[:-1]) + 1
        bounds = np.concatenate(([0], change, [flat.size]))
        runs = np.diff(bounds)
        if valid[0]:
            runs = np.concatenate(([0], runs))  # runs always start with a (possibly empty) zero run
        if runs.size % 2:
            runs = np.concatenate((runs, [0]))  # ... and end with a (possibly empty) non-zero run
        nz = flat[valid].astype(np.int32)
        delta = np.diff(nz, prepend=np.int32(0))
        zig = (delta << 1) ^ (delta >> 31)  # zigzag: small |delta| → small code
        nib = np.concatenate((_vle_encode(runs.astype(np.uint32)), _vle_encode(zig.view(np.uint32))))
        if nib.size % 2:
            nib = np.concatenate((nib, np.zeros(1, np.uint8)))
        packed = nib[0::2] | (nib[1::2] << 4)
        return np.uint32(runs.size // 2).astype("<u4").tobytes() + packed.tobytes()

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        n = check_size(data, width, height)
        if len(data) < 5:
            raise ValueError(f"rvl: {len(data)} bytes is too short for a depth image")
        if len(data) > 8 + 6 * n:  # the worst case encoding of n pixels is far below this
            raise ValueError(f"rvl: {len(data)} bytes is too long for {width}×{height}")
        buf = np.frombuffer(data, np.uint8)
        pairs = int(buf[:4].view("<u4")[0])
        if pairs > n:
            raise ValueError(f"rvl: corrupt header ({pairs} runs for {n} pixels)")
        packed = buf[4:]
        nib = np.empty(2 * packed.size, np.uint8)
        nib[0::2] = packed & 15
        nib[1::2] = packed >> 4
        values, ends = _vle_decode(nib)
        if values.size < 2 * pairs:
            raise ValueError("rvl: truncated data (run lengths missing)")
        runs = values[: 2 * pairs]
        if runs.sum() != n:
            raise ValueError(f"rvl: run lengths cover {int(runs.sum())} pixels, expected {n}")
        n_valid = int(runs[1::2].sum())
        deltas = values[2 * pairs:]
        if deltas.size == n_valid + 1 and deltas[-1] == 0 and ends[-1] == (ends[-2] if ends.size > 1 else -1) + 1:
            deltas = deltas[:-1]  # the padding nibble
        if deltas.size != n_valid:
            raise ValueError(f"rvl: {deltas.size} depth values for {n_valid} valid pixels")
        deltas = deltas.astype(np.int64)
        signed = (deltas >> 1) ^ -(deltas & 1)
        depth_values = np.cumsum(signed)
        if n_valid and (depth_values.min() < 1 or depth_values.max() > 0xFFFF):
            raise ValueError("rvl: corrupt data (depth values out of range)")
        valid = np.repeat(np.tile(np.array([False, True]), pairs), runs)
        out = np.zeros(n, np.uint16)
        out[valid] = depth_values
        return out.reshape(height, width)
