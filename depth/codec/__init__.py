"""Lossless depth codecs and their wire ids.

Every codec turns an H×W uint16 depth image into bytes and back, bit-exact. `decode` is safe on
hostile input: it is pure Python/numpy or a bounds-checked library call, refuses output larger than
width×height, and raises `ValueError` on anything that is not a valid encoding.

Wire ids (stable; the backend decodes by id, never change or reuse one):

====  ============  =====================================================================
 id   name          what
====  ============  =====================================================================
 0    raw           little-endian uint16, row-major (reference; no compression)
 1    png16         16-bit greyscale PNG via OpenCV
 2    zstd          zstd level 1 on the raw little-endian bytes
 3    rvl           RVL-class: zero/non-zero run lengths + zigzag deltas, 4-bit varints
 4    delta-zstd    previous-pixel delta per row, zigzagged, byte planes split, zstd level 1
 5    auto          1 byte inner id (2 or 4, chosen per frame) + that codec's payload
====  ============  =====================================================================

Default (`uplink.depth_codec`): auto — zstd on quantised sensor depth, delta-zstd on noisy continuous
depth; see `python -m bench depth`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

MAX_PIXELS = 16384 * 16384  # refuse to even try decoding larger claimed images


@runtime_checkable
class DepthCodec(Protocol):
    """A lossless uint16 depth codec with a stable wire id."""

    name: str
    codec_id: int

    def encode(self, depth: np.ndarray) -> bytes: ...

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray: ...


def _registry() -> dict[str, DepthCodec]:
    from depth.codec.auto import AutoCodec
    from depth.codec.delta_zstd import DeltaZstdCodec
    from depth.codec.png16 import Png16Codec
    from depth.codec.raw import RawCodec
    from depth.codec.rvl import RvlCodec
    from depth.codec.zstd import ZstdCodec

    codecs: list[DepthCodec] = [RawCodec(), Png16Codec(), ZstdCodec(), RvlCodec(), DeltaZstdCodec(),
                               AutoCodec()]
    return {c.name: c for c in codecs}


_CODECS: dict[str, DepthCodec] | None = None


def _codecs() -> dict[str, DepthCodec]:
    global _CODECS
    if _CODECS is None:
        _CODECS = _registry()
    return _CODECS


def names() -> list[str]:
    """Codec names in wire-id order."""
    return [c.name for c in sorted(_codecs().values(), key=lambda c: c.codec_id)]


def get_codec(name: str) -> DepthCodec:
    """The codec called `name`; ValueError naming the known ones otherwise."""
    try:
        return _codecs()[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown depth codec {name!r} (known: {', '.join(names())})") from None


def codec_by_id(codec_id: int) -> DepthCodec:
    """The codec with wire id `codec_id`; ValueError otherwise."""
    for c in _codecs().values():
        if c.codec_id == codec_id:
            return c
    raise ValueError(f"unknown depth codec id {codec_id!r} (known: "
                     f"{', '.join(f'{c.codec_id}={c.name}' for c in _codecs().values())})")


def check_depth(depth: np.ndarray) -> np.ndarray:
    """Validate an encoder input: a 2-D uint16 array (made C-contiguous)."""
    if not isinstance(depth, np.ndarray) or depth.dtype != np.uint16 or depth.ndim != 2:
        got = f"{depth.dtype} array of shape {depth.shape}" if isinstance(depth, np.ndarray) else type(depth).__name__
        raise ValueError(f"depth: expected an H×W uint16 array, got {got}")
    if depth.size == 0:
        raise ValueError(f"depth: expected a non-empty image, got shape {depth.shape}")
    return np.ascontiguousarray(depth)


def check_size(data: bytes, width: int, height: int) -> int:
    """Validate decoder arguments; returns the pixel count."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"data: expected bytes, got {type(data).__name__}")
    for label, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v <= 0:
            raise ValueError(f"{label}: expected a positive integer, got {v!r}")
    n = int(width) * int(height)
    if n > MAX_PIXELS:
        raise ValueError(f"size {width}×{height} is larger than the {MAX_PIXELS} pixel limit")
    return n
