"""Writing the config file back: one key changed, validated, written atomically (temp + fsync + rename).

The rest of the file is kept as the user wrote it — comments, order, blank lines, quoting — by
editing it with tomlkit (a style-preserving TOML library) instead of re-emitting the parsed table.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from capture.configcore import ConfigError
from device import settings
from device.config import Config


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def persist_value(path: Path, key: str, value: Any) -> None:
    """Set dotted `key` to `value` in the TOML file at `path` (created if missing), after checking that
    the whole resulting file loads as a valid config."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    table: dict[str, Any] = settings.load_toml(path) if path.exists() else {}  # errors name the file
    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    except (TOMLKitError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    node: Any = table
    tk_node: Any = doc
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: {part} is not a table")
        node = child
        if part not in tk_node:
            tk_node[part] = tomlkit.table()
        tk_node = tk_node[part]
    node[parts[-1]] = value
    settings.build(Config, table, "")  # the file on its own must stay loadable
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"cannot store non-finite number {value}")
    try:
        tk_node[parts[-1]] = value
        text = tomlkit.dumps(doc)
    except (TOMLKitError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: cannot write {key} = {value!r} as TOML ({e})") from None
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{key}: value is not valid Unicode text") from None
    if tomllib.loads(text) != table:  # the edit must round-trip exactly; never write a file that doesn't
        raise ConfigError(f"{path}: cannot write {key} = {value!r} as TOML")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    atomic_write(path, data, mode)


def dumps(table: dict[str, Any]) -> str:
    """TOML for a table of scalars, lists and sub-tables (what a crowdcap config holds)."""
    lines: list[str] = []
    _emit(table, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _emit(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    subtables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and (scalars or not subtables):
        lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
    for k, v in scalars.items():
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in subtables.items():
        _emit(v, [*path, k], lines)


def toml_value(v: Any) -> str:
    """`v` as TOML value text (what `settings.parse_text` reads back)."""
    return _value(v)


def _key(k: str) -> str:
    if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k):
        return k
    return _string(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ConfigError(f"cannot store non-finite number {v}")
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise ConfigError(f"cannot store a {type(v).__name__} in TOML")


def _string(s: str) -> str:
    # JSON escapes are valid TOML basic-string escapes; DEL must be escaped in TOML but not JSON.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")

