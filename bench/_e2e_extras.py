"""Parts of `python -m bench e2e` that report the ingest and the mesh step apart from the device
(issue 13: "report the ingest and mesh steps' RSS separately"); kept out of bench/e2e.py so edits to
the bench's sections and these measurements stay apart.

- `own_peak_rss_mb()`: a process's own peak RSS (VmHWM). Not ru_maxrss: Linux carries a parent's RSS
  at fork into the child's ru_maxrss across exec, so a section or an ingest spawned by a bigger process
  reported the parent's (the ingest's "308 MB" was the device's).
- `mesh_step(ingest_out)`: `crowdcap mesh` on the session the ingest wrote, in its own process: the mesh
  fusion step's peak RSS and CPU.
- `ingest_cpu_split(stats)`: the ingest's CPU per frame without its once-per-session report.
- `source_cache_mb(source)`: the frames a synthetic/replay source keeps in memory (the demo's 30
  pre-rendered frames: ~46 MB), reported beside the device's peak RSS.
- `warm_model_cache(dir)`: every shipped model prepared into `dir` (another process), so the sections
  measure a device after its first start — it keeps prepared models in device.state_dir/model-cache
  and does not import onnx again (~22 MB resident); `--cold-models` measures a first start instead.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

_MESH = """
import json, sys, time
from device.cli import main
cpu0 = time.process_time()
rc = main(["mesh", sys.argv[1], "-o", sys.argv[2]])
# VmHWM, not ru_maxrss: Linux carries the parent's RSS at fork into ru_maxrss across exec
hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
print(json.dumps({"rc": rc, "cpu_s": time.process_time() - cpu0, "peak_rss_mb": hwm / 1024}))
"""


_WARM = """
import sys
from redact.cards import default_card_path, load_card
from redact.runtime import prepared_bytes
for card in sorted(default_card_path().parent.glob("*.toml")):
    try:
        prepared_bytes(load_card(str(card)), sys.argv[1])
    except Exception as e:  # a card whose model is not shipped (fetched on demand): prepared when used
        print(f"{card.name}: {type(e).__name__}: {e}", file=sys.stderr)
"""


def warm_model_cache(cache_dir: Path) -> None:
    """Prepare every shipped model card into `cache_dir` in another process (see the module doc)."""
    subprocess.run([sys.executable, "-c", _WARM, str(cache_dir)], capture_output=True, text=True, timeout=600)


def ingest_cpu_split(stats: dict[str, Any]) -> dict[str, Any]:
    """The ingest's CPU per frame without its per-session report (report.html, text files: written
    once at the end of a short run, so per frame it would weigh by how few frames got through)."""
    frames = max(1, stats.get("frame", 0))
    fin = stats.get("_finalize_cpu_s", 0.0)
    return {"ingest_cpu_ms_per_frame_without_report": round((stats.get("_cpu_s", 0.0) - fin) * 1000 / frames, 2),
            "ingest_report_cpu_s": round(fin, 2), "ingest_depth_png": stats.get("sink", {})}


def source_cache_mb(source: Any) -> float:
    """MB of frames a synthetic/replay source holds in memory (pre-rendered or cached): part of the device
    process's RSS that a real camera's driver would hold instead (reported beside the peak, not taken off)."""
    while source is not None and not hasattr(source, "_cache") and hasattr(source, "source"):
        source = source.source  # a wrapper (device/zones.py's gate)
    total = 0
    cache = getattr(source, "_cache", None) or []
    for item in cache.values() if isinstance(cache, dict) else cache:  # replay: by file names
        arrays = item.values() if isinstance(item, dict) else item if isinstance(item, tuple | list) else [item]
        total += sum(getattr(a, "nbytes", 0) for a in arrays)
    return round(total / 1e6, 1)


def own_peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries a parent's RSS at fork into the
    child's ru_maxrss across exec, so a section spawned by a bigger process would report the parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def mesh_step(ingest_out: Path) -> dict[str, Any]:
    """`crowdcap mesh` on the session the ingest wrote, in its own process: the mesh fusion step's peak
    RSS and CPU, apart from the device's and the ingest's (issue 13 asks for each separately)."""
    sessions = sorted(p.parent for p in ingest_out.glob("*/*/frames.jsonl"))
    if not sessions:
        return {"error": "no session folder written by the ingest"}
    out = sessions[0] / "mesh.glb"
    try:
        proc = subprocess.run([sys.executable, "-c", _MESH, str(sessions[0]), str(out)], capture_output=True,
                              text=True, timeout=600)
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
        return {"error": f"mesh step failed: {e}"}
    size = out.stat().st_size if out.exists() else 0
    out.unlink(missing_ok=True)  # tens of MB per section: measured, not kept
    return {"ok": got["rc"] == 0, "cpu_s": round(got["cpu_s"], 2), "peak_rss_mb": round(got["peak_rss_mb"], 1),
            "mesh_kb": round(size / 1000, 1)}
