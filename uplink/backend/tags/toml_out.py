"""A small TOML writer for policy files (scalars, arrays of scalars, tables, arrays of tables)."""

from __future__ import annotations

import json
import math
from typing import Any


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"TOML: cannot write {v}")
        return repr(round(v, 6))
    if isinstance(v, str):
        if "\n" not in v and "'" not in v and v.isprintable():
            return f"'{v}'"  # literal string: regexes need no escaping
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    raise ValueError(f"TOML: cannot write a {type(v).__name__}")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def dumps(doc: dict[str, Any], comments: dict[str, list[str]] | None = None) -> str:
    """TOML text; `comments[table_name]` lines are written above that array of tables' entries."""
    lines: list[str] = []
    simple = {k: v for k, v in doc.items() if not isinstance(v, dict) and not _is_tables(v)}
    for k, v in simple.items():
        lines.append(f"{_key(k)} = {_scalar(v)}")
    for k, v in doc.items():
        if isinstance(v, dict):
            lines += ["", f"[{_key(k)}]"] + [f"{_key(a)} = {_scalar(b)}" for a, b in v.items()]
        elif _is_tables(v):
            for i, t in enumerate(v):
                lines.append("")
                for c in (comments or {}).get(f"{k}[{i}]", []):
                    lines.append(f"# {c}")
                lines.append(f"[[{_key(k)}]]")
                for a, b in t.items():
                    if isinstance(b, dict):
                        raise ValueError(f"TOML: nested table {k}.{a} not supported")
                    lines.append(f"{_key(a)} = {_scalar(b)}")
    return "\n".join(lines) + "\n"


def _is_tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
