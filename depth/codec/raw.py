"""Codec 0: raw little-endian uint16 (reference and fallback)."""

from __future__ import annotations

import numpy as np

from depth.codec import check_depth, check_size


class RawCodec:
    name = "raw"
    codec_id = 0

    def encode(self, depth: np.ndarray) -> bytes:
        return check_depth(depth).astype("<u2", copy=False).tobytes()

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        n = check_size(data, width, height)
        if len(data) != 2 * n:
            raise ValueError(f"raw depth: expected {2 * n} bytes for {width}×{height}, got {len(data)}")
        return np.frombuffer(data, dtype="<u2").astype(np.uint16).reshape(height, width)
