"""A minimal binary glTF 2.0 (.glb) writer for vertex-coloured triangle meshes.

Open3D 0.20.0's own .glb output embeds the buffer as a base64 data URI and uses 16-bit indices even
past 65,535 vertices, so viewers (and Open3D's own reader) reject it. This writes the standard layout:
a JSON chunk and one BIN chunk with 4-byte aligned views: uint32 indices, float32 positions and
normals, normalised uint8 RGBA colours (COLOR_0).

Axes: glTF is right-handed, Y up, metres (a viewer puts +Y up and looks along -Z). Our world frame is
OpenCV's (x right, y down, z ahead: the first camera's frame, see docs/frames.md), so the writer turns
it by 180° about X — (x, y, z) → (x, -y, -z), a proper rotation: handedness is kept — unless the caller
says its vertices are already in glTF axes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_FLOAT, _UBYTE, _UINT = 5126, 5121, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
OPENCV_TO_GLTF = np.diag([1.0, -1.0, -1.0])  # 180° about X: y down / z ahead → y up / z towards the viewer


def write_glb(path: str | Path, vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None,
              normals: np.ndarray | None = None, *, axes: str = "opencv", uvs: np.ndarray | None = None,
              texture_png: bytes | None = None) -> None:
    """vertices N×3 (m), triangles M×3 indices, colors N×3 in [0, 1] float or uint8, normals N×3.

    axes: "opencv" (our world frame; converted to glTF's Y-up) or "gltf" (written as given).
    uvs N×2 (glTF convention: origin top-left) with texture_png: a base-colour texture, embedded."""
    if axes not in ("opencv", "gltf"):
        raise ValueError(f"glb: axes: expected 'opencv' or 'gltf', got {axes!r}")
    if axes == "opencv":
        vertices = np.asarray(vertices, dtype=np.float64) @ OPENCV_TO_GLTF
        if normals is not None:
            normals = np.asarray(normals, dtype=np.float64) @ OPENCV_TO_GLTF
    v = np.ascontiguousarray(vertices, dtype="<f4")
    t = np.ascontiguousarray(triangles, dtype="<u4")
    if v.ndim != 2 or v.shape[1] != 3 or t.ndim != 2 or t.shape[1] != 3 or len(v) == 0 or len(t) == 0:
        raise ValueError(f"glb: expected N×3 vertices and M×3 triangles, got {v.shape} and {t.shape}")
    if t.max() >= len(v):
        raise ValueError("glb: a triangle index is out of range")
    views: list[dict] = []
    accessors: list[dict] = []
    blob = bytearray()

    def add(data: np.ndarray, component: int, kind: str, target: int, count: int, **extra: object) -> int:
        while len(blob) % 4:
            blob.append(0)
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": data.nbytes, "target": target})
        blob.extend(data.tobytes())
        accessors.append({"bufferView": len(views) - 1, "componentType": component, "count": count,
                          "type": kind, **extra})
        return len(accessors) - 1

    indices = add(t.reshape(-1), _UINT, "SCALAR", _ELEMENT_ARRAY_BUFFER, t.size)
    attributes = {"POSITION": add(v, _FLOAT, "VEC3", _ARRAY_BUFFER, len(v),
                                  min=v.min(axis=0).tolist(), max=v.max(axis=0).tolist())}
    if normals is not None and len(normals) == len(v):
        n = np.ascontiguousarray(normals, dtype="<f4")
        attributes["NORMAL"] = add(n, _FLOAT, "VEC3", _ARRAY_BUFFER, len(v))
    if colors is not None and len(colors) == len(v):
        c = np.asarray(colors)
        c8 = c if c.dtype == np.uint8 else np.clip(np.rint(c * 255), 0, 255).astype(np.uint8)
        rgba = np.concatenate((c8, np.full((len(v), 1), 255, np.uint8)), axis=1)
        attributes["COLOR_0"] = add(rgba, _UBYTE, "VEC4", _ARRAY_BUFFER, len(v), normalized=True)
    primitive: dict = {"attributes": attributes, "indices": indices, "mode": 4}
    extra: dict = {}
    if uvs is not None and texture_png is not None:
        uv = np.ascontiguousarray(uvs, dtype="<f4")
        if uv.shape != (len(v), 2):
            raise ValueError(f"glb: expected {len(v)}×2 uvs, got {uv.shape}")
        attributes["TEXCOORD_0"] = add(uv, _FLOAT, "VEC2", _ARRAY_BUFFER, len(v))
        while len(blob) % 4:
            blob.append(0)
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(texture_png)})
        blob.extend(texture_png)
        primitive["material"] = 0
        extra = {"images": [{"bufferView": len(views) - 1, "mimeType": "image/png"}],
                 "samplers": [{"magFilter": 9729, "minFilter": 9729, "wrapS": 33071, "wrapT": 33071}],
                 "textures": [{"source": 0, "sampler": 0}],
                 "materials": [{"name": "keyframes (redacted)", "doubleSided": True, "pbrMetallicRoughness": {
                     "baseColorTexture": {"index": 0}, "metallicFactor": 0.0, "roughnessFactor": 1.0}}]}
    while len(blob) % 4:
        blob.append(0)
    doc = {
        "asset": {"version": "2.0", "generator": "crowdcap depth.gltf",
                  "extras": {"frame": "world: first camera, turned to glTF axes (Y up, metres); docs/frames.md"}},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [primitive]}],
        "buffers": [{"byteLength": len(blob)}], "bufferViews": views, "accessors": accessors, **extra,
    }
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(blob)
    with open(path, "wb") as f:
        f.write(struct.pack("<4sII", b"glTF", 2, total))
        f.write(struct.pack("<I4s", len(js), b"JSON") + js)
        f.write(struct.pack("<I4s", len(blob), b"BIN\x00") + bytes(blob))
