"""Imports flow one way (docs/ARCHITECTURE.md): lower packages never import `device`, device-side code
never imports `uplink.backend`, and the modules of `device/` import each other without a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOWER = ("capture", "redact", "depth", "uplink")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function; `from pkg import sub` names pkg.sub
    when sub is a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            base = ROOT.joinpath(*node.module.split("."))
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if base.joinpath(f"{a.name}.py").exists() or base.joinpath(a.name).is_dir())
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_lower_packages_never_import_device() -> None:
    offenders = [f"{_module(p)} imports {m}" for pkg in LOWER for p in _sources(pkg)
                 for m in sorted(_imports(p)) if m == "device" or m.startswith("device.")]
    assert offenders == []


def test_device_side_code_never_imports_the_backend() -> None:
    device_side = [p for pkg in ("device", *LOWER) for p in _sources(pkg)
                   if not _module(p).startswith(("uplink.backend", "device.commands"))]
    offenders = [f"{_module(p)} imports {m}" for p in device_side for m in sorted(_imports(p))
                 if m.startswith("uplink.backend")]
    assert offenders == []


def test_device_modules_import_each_other_without_a_circle() -> None:
    graph = {_module(p): {m for m in _imports(p) if m.startswith("device.")} for p in _sources("device")}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    circles: list[list[str]] = []

    def visit(mod: str) -> None:
        state[mod] = 1
        path.append(mod)
        for dep in sorted(graph.get(mod, ())):
            if mod.startswith(dep + ".") or dep == mod or dep not in graph:  # a package's own parents
                continue
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod)
    assert circles == []
