"""Codec 2: zstd on the raw little-endian bytes (wins on real Kinect depth with many holes)."""

from __future__ import annotations

import numpy as np
import zstandard

from depth.codec import check_depth, check_size


def zstd_decompress_exact(data: bytes, n_bytes: int, label: str) -> bytes:
    """Decompress one zstd frame that must hold exactly `n_bytes`; refuses bombs and garbage."""
    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as e:
        raise ValueError(f"{label}: not a zstd frame ({e})") from None
    if params.content_size not in (zstandard.CONTENTSIZE_UNKNOWN, n_bytes):
        raise ValueError(f"{label}: frame holds {params.content_size} bytes, expected {n_bytes}")
    try:
        # max_output_size bounds the allocation when the header has no size; the stream reader
        # stops at n_bytes + 1 so an oversize stream is detected without inflating it all.
        with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=False) as reader:
            out = reader.read(n_bytes + 1)
            while len(out) < n_bytes + 1:
                more = reader.read(n_bytes + 1 - len(out))
                if not more:
                    break
                out += more
    except zstandard.ZstdError as e:
        raise ValueError(f"{label}: corrupt zstd data ({e})") from None
    if len(out) != n_bytes:
        raise ValueError(f"{label}: decompressed to {len(out)}{'+' if len(out) > n_bytes else ''} bytes, "
                         f"expected {n_bytes}")
    return out


class ZstdCodec:
    name = "zstd"
    codec_id = 2

    def __init__(self, level: int = 1) -> None:
        self.level = level

    def encode(self, depth: np.ndarray) -> bytes:
        # A compressor per call: cheap, and zstandard contexts must not be shared across threads.
        cctx = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        return cctx.compress(check_depth(depth).astype("<u2", copy=False).tobytes())

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        n = check_size(data, width, height)
        raw = zstd_decompress_exact(bytes(data), 2 * n, "zstd depth")
        return np.frombuffer(raw, dtype="<u2").astype(np.uint16).reshape(height, width)
