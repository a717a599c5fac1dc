"""`python -m bench NAME [ARGS...]` (or `crowdcap bench NAME`): run one benchmark, print JSON.

Each benchmark is a module `bench/<name>.py` with `main(argv: list[str]) -> dict`.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m bench NAME [ARGS...]\nbenchmarks: {', '.join(available())}")
        return 0 if argv else 2
    name = argv[0].replace("-", "_")
    if name not in available():
        print(f"bench: unknown benchmark {argv[0]!r} (available: {', '.join(available())})", file=sys.stderr)
        return 2
    result = importlib.import_module(f"bench.{name}").main(argv[1:])
    print(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
