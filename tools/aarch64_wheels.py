"""Resolve crowdcap's dependencies for the target board (Raspberry Pi 4/5, Raspberry Pi OS Bookworm:
arm64, glibc 2.36, CPython 3.11) with binary wheels only, so a dependency without an ARM wheel is
caught here, not by a user on a Pi.

    python tools/aarch64_wheels.py [--extra test] [--dest DIR] [--python 3.11] [--glibc 2.36]

Runs `pip download --only-binary :all: --platform manylinux_2_X_aarch64 ...` (every manylinux tag the
board's glibc accepts) on the project's [project].dependencies (plus extras asked for), transitive
dependencies included. Markers of the project's own requirements are evaluated for the board (pip would
evaluate them for this machine); transitive ones are pip's, evaluated here — the emulated run
(tools/arm64_smoke.sh) installs for real on arm64 and catches what that misses. Exit 0 and a list of
the resolved wheels when everything has an aarch64 (or pure-Python) wheel; exit 1 naming pip's
complaint otherwise. Needs network access to the package
index (it downloads ~200 MB of wheels into --dest, a temporary folder by default).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        if extra not in project.get("optional-dependencies", {}):
            raise SystemExit(f"--extra {extra}: pyproject.toml has no such extra")
        reqs += project["optional-dependencies"][extra]
    return reqs


def target_env(python: str) -> dict[str, str]:
    """PEP 508 marker environment of the board. pip evaluates markers against the machine it runs on, not
    --platform, so `platform_machine == 'x86_64'` would pull an x86-only package into an aarch64 check."""
    return {"platform_machine": "aarch64", "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "python_version": python, "python_full_version": f"{python}.0", "implementation_version": f"{python}.0",
            "platform_release": "", "platform_version": "", "extra": ""}


def for_target(reqs: list[str], python: str) -> list[str]:
    """The requirements that apply on the board, markers evaluated there and stripped."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.requirements import Requirement
    env = target_env(python)
    kept = []
    for text in reqs:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        req.marker = None
        kept.append(str(req))
    return kept


def platforms(glibc: str) -> list[str]:
    major, minor = (int(v) for v in glibc.split("."))
    return ["manylinux2014_aarch64", *(f"manylinux_{major}_{m}_aarch64" for m in range(17, minor + 1))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extra", action="append", default=[], help="also resolve this extra (repeatable)")
    ap.add_argument("--dest", help="download folder (default: a temporary one, removed after)")
    ap.add_argument("--python", default="3.11", help="target CPython version (default 3.11, Bookworm's)")
    ap.add_argument("--glibc", default="2.36", help="target glibc (default 2.36, Bookworm's)")
    args = ap.parse_args(argv)
    reqs = for_target(requirements(args.extra), args.python)
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(args.dest or tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--dest", str(dest),
               "--python-version", args.python, "--implementation", "cp",
               "--abi", f"cp{args.python.replace('.', '')}", "--abi", "abi3", "--abi", "none"]
        for p in platforms(args.glibc):
            cmd += ["--platform", p]
        cmd += ["--platform", "any"]
        proc = subprocess.run([*cmd, *reqs], capture_output=True, text=True)
        if proc.returncode:
            tail = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln or "No matching" in ln] or \
                proc.stderr.splitlines()[-5:]
            print(f"aarch64: NOT resolvable with binary wheels for CPython {args.python}, glibc {args.glibc}:",
                  *tail, sep="\n  ", file=sys.stderr)
            return 1
        wheels = sorted(p.name for p in dest.glob("*.whl"))
        native = [w for w in wheels if "aarch64" in w]
        print(f"aarch64: {len(wheels)} wheels resolve for CPython {args.python}, glibc {args.glibc} "
              f"({len(native)} native aarch64, the rest pure Python):")
        for w in wheels:
            print(f"  {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
