"""`python -m bench texture`: how long a UV-textured mesh takes (decimate, atlas, albedo projection)
from synthetic keyframes — on the backend, and whether it could fit on the device off the hot path.

Baseline: the vertex-coloured mesh (TSDF fusion alone). Reports wall and CPU seconds per step.
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def main(argv: list[str]) -> dict[str, Any]:
    import copy

    from capture.synthetic import SyntheticSource
    from depth.fusion import downscale_keyframe, fuse_keyframes
    from depth.texture import texture_mesh

    p = argparse.ArgumentParser(prog="python -m bench texture")
    p.add_argument("--keyframes", type=int, default=10)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--triangles", type=int, default=20000, help="triangles for the grid atlas")
    p.add_argument("--uvatlas-triangles", type=int, default=4000, help="triangles for UVAtlas (slow)")
    args = p.parse_args(argv)
    src = SyntheticSource(pace="fast", n_frames=args.keyframes * 10, width=640, height=480)
    src.open()
    kfs = [downscale_keyframe(f.attachments["truth"]["pose"], f.color, f.depth, f.intrinsics, f.depth_scale, 2, f.seq)
           for i, f in enumerate(iter(src.read, None)) if i % 10 == 0]
    w0, c0 = time.perf_counter(), time.process_time()
    mesh = fuse_keyframes(kfs, voxel_size=0.02, depth_trunc=8.0)
    fuse = {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(time.process_time() - c0, 2),
            "triangles": len(mesh.triangles)}
    runs = {}
    for label, atlas, tris in (("grid", "grid", args.triangles), ("uvatlas", "uvatlas", args.uvatlas_triangles)):
        w0, c0 = time.perf_counter(), time.process_time()
        tm = texture_mesh(copy.deepcopy(mesh), kfs, tex_size=args.size, max_triangles=tris, atlas=atlas)
        wall = time.perf_counter() - w0
        runs[label] = {"wall_s": round(wall, 2), "cpu_s": round(time.process_time() - c0, 2), "atlas": tm.atlas,
                       "triangles": len(tm.triangles), "texture": f"{args.size}x{args.size}",
                       "steps_wall_s": tm.seconds, "over_fusion_wall": round(wall / max(fuse["wall_s"], 1e-6), 1)}
    return {"keyframes": len(kfs), "keyframe_size": f"{kfs[0].color_rgb.shape[1]}x{kfs[0].color_rgb.shape[0]}",
            "baseline_fusion_vertex_colours": fuse, "textured": runs}
