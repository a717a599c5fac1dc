"""Typed config from TOML: one loader that validates every section's dataclass in one place.

Each package declares its own section as a dataclass (`capture.config.CaptureConfig`, ...); this module
knows how to fill any such dataclass from a TOML table, check each value against its type hint and the
field's `metadata` (min/max/choices/secret), run the section's own `check()` for cross-field rules, and
name the offending key in every error.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from capture.configcore import ConfigError, read_toml

__all__ = ["ConfigError", "build", "coerce", "errors", "field_at", "load_toml", "parse_text", "to_dict", "with_value"]

# Keys that were removed or moved: an old config names them, the error says where they went.
MOVED = {"depth.codec": "removed: the wire's depth codec is uplink.depth_codec"}


def build(cls: type, table: Any, prefix: str) -> Any:
    """Fill dataclass `cls` from a TOML table; unknown keys and wrong types are ConfigErrors."""
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix}: expected a table, got {_tname(table)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(_unknown(prefix, unknown[0], fields))
    values = {}
    for name, value in table.items():
        values[name] = coerce(value, hints[name], _join(prefix, name), fields[name].metadata)
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except ConfigError as e:
            raise ConfigError(f"{_join(prefix, str(e))}" if prefix else str(e)) from None
    return obj


def _unknown(prefix: str, name: str, fields: Any) -> str:
    key = _join(prefix, name)
    if key in MOVED:
        return f"{key}: {MOVED[key]}"
    return f"{key}: unknown key (known: {', '.join(sorted(fields))})"


def errors(cls: type, table: Any, prefix: str = "") -> list[str]:
    """Every problem `build(cls, table, prefix)` would raise, not just the first: each unknown key, each
    bad value, and (when the values are fine) the section's own cross-field check, section by section."""
    if not isinstance(table, dict):
        return [f"{prefix}: expected a table, got {_tname(table)}"]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    out = [_unknown(prefix, name, fields) for name in sorted(set(table) - set(fields))]
    bad_values = False
    for name, value in table.items():
        if name not in fields:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            sub = errors(hint, value, _join(prefix, name))
            out += sub
            bad_values |= bool(sub)
            continue
        try:
            coerce(value, hint, _join(prefix, name), fields[name].metadata)
        except ConfigError as e:
            out.append(str(e))
            bad_values = True
    if not out and not bad_values:
        try:
            build(cls, table, prefix)
        except ConfigError as e:
            out.append(str(e))
    return out


def coerce(value: Any, hint: Any, key: str, meta: Any = None) -> Any:
    """Check `value` against type `hint` (and bounds in `meta`); return it in the field's type."""
    meta = meta or {}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key, meta)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: unexpected value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {_tname(value)}")
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {_tname(value)}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else build(hint, value, key)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return _bounded(value, key, meta)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return _bounded(float(value), key, meta)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported setting type {hint!r}")


def _bounded(v: float, key: str, meta: Any) -> Any:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and v < lo:
        raise ConfigError(f"{key}: expected a value ≥ {lo}, got {v}")
    if hi is not None and v > hi:
        raise ConfigError(f"{key}: expected a value ≤ {hi}, got {v}")
    return v


def parse_text(text: str) -> Any:
    """A value typed on a console or command line: TOML syntax if it parses, else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text


def load_toml(path: str | Path) -> dict[str, Any]:
    return read_toml(path, "config file")


def to_dict(obj: Any, *, mask_secrets: bool = True) -> Any:
    """Plain dict of a config dataclass; secret fields shown as '***' when set."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if mask_secrets and f.metadata.get("secret") and v:
                out[f.name] = "***"
            else:
                out[f.name] = to_dict(v, mask_secrets=mask_secrets)
        return out
    if isinstance(obj, list | tuple):
        return [to_dict(v, mask_secrets=mask_secrets) for v in obj]
    return obj


def field_at(root: Any, key: str) -> tuple[Any, dataclasses.Field[Any], Any]:
    """(owning dataclass instance, field, type hint) for a dotted key like 'capture.fps'."""
    obj: Any = root
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"{'.'.join(parts[:i])}: not a section")
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if part not in fields:
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: unknown key")
        if i == len(parts) - 1:
            return obj, fields[part], typing.get_type_hints(type(obj))[part]
        obj = getattr(obj, part)
    raise ConfigError(f"{key}: empty key")


def with_value(root: Any, key: str, value: Any) -> Any:
    """A copy of config `root` with dotted `key` set to `value`, validated like a file would be."""
    parts = key.split(".")
    field_at(root, key)  # raises for unknown keys
    table = to_dict(root, mask_secrets=False)
    node = table
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return build(type(root), table, "")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _tname(v: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)
