"""Codec 1: 16-bit greyscale PNG via OpenCV (the baseline everyone can open)."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from depth.codec import check_depth, check_size

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Png16Codec:
    name = "png16"
    codec_id = 1

    def __init__(self, level: int = 1) -> None:
        self.level = level  # zlib level; 1 is what the BRIEF's baseline measures

    def encode(self, depth: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".png", check_depth(depth), [cv2.IMWRITE_PNG_COMPRESSION, self.level])
        if not ok:
            raise ValueError("png16: OpenCV could not encode the depth image")
        return buf.tobytes()

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        check_size(data, width, height)
        data = bytes(data)
        # Read the IHDR ourselves first so a PNG claiming a huge size is refused before libpng allocates.
        if len(data) < 33 or not data.startswith(_SIGNATURE) or data[12:16] != b"IHDR":
            raise ValueError("png16: not a PNG stream")
        w, h, bit_depth, color_type = struct.unpack(">IIBB", data[16:26])
        if (w, h) != (width, height):
            raise ValueError(f"png16: image is {w}×{h}, expected {width}×{height}")
        if bit_depth != 16 or color_type != 0:
            raise ValueError(f"png16: expected 16-bit greyscale, got bit depth {bit_depth}, colour type {color_type}")
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None or img.dtype != np.uint16 or img.shape != (height, width):
            raise ValueError("png16: corrupt PNG data")
        return img
