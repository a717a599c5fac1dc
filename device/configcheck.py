"""`crowdcap config check`: every check `run` would make at start, all errors reported at once.

A check is a small function `(cfg) -> list[str]` registered in `CHECKS`; each is independent (one
failing does not hide another) and names the key in each error. The schema (types, bounds, unknown
keys, each section's cross-field rules) is checked first, key by key; then the checks below run on the
config with each broken section replaced by its defaults (so an error in one section does not hide
another's). Add a check by appending to `CHECKS` (or `register(fn)`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from device import checks, config, settings

Check = Callable[[config.Config], list[str]]
CHECKS: list[Check] = []


def register(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def check_file(path: str | Path) -> list[str]:
    """All problems with the config file at `path` (empty = `run` would accept it)."""
    try:
        table = settings.load_toml(path)
    except config.ConfigError as e:
        return [str(e)]
    problems = settings.errors(config.Config, table, "")
    cfg = _best_effort(table)
    for check in CHECKS:
        try:
            problems += check(cfg)
        except Exception as e:  # a check that breaks is a problem to report, not a traceback
            problems.append(f"{getattr(check, '__name__', 'check')}: {type(e).__name__}: {e}")
    return problems


def _best_effort(table: dict) -> config.Config:
    """The config with every section that does not build on its own replaced by its defaults."""
    import dataclasses

    cfg = config.Config()
    for f in dataclasses.fields(cfg):
        section = table.get(f.name) if isinstance(table, dict) else None
        if section is None:
            continue
        try:
            setattr(cfg, f.name, settings.build(type(getattr(cfg, f.name)), section, f.name))
        except config.ConfigError:
            pass
    return cfg


@register
def missing_files(cfg: config.Config) -> list[str]:
    """Files and folders the config names that are not there (relative paths: from the current
    folder, as the service resolves them from its working directory)."""
    wanted: list[tuple[str, str, bool]] = [("redact.policy", cfg.redact.policy, False)]
    wanted += [(f"redact.models[{i}]", card, False) for i, card in enumerate(cfg.redact.models)]
    if cfg.capture.source.startswith("replay:"):
        wanted.append(("capture.source", cfg.capture.source.removeprefix("replay:"), True))
    wanted += [(f"uplink.{k}", getattr(cfg.uplink, k), False) for k in ("tls_ca", "tls_cert", "tls_key")]
    out = []
    for key, value, is_dir in wanted:
        if not value:
            continue
        path = Path(value)
        if is_dir and not path.is_dir():
            out.append(f"{key}: {value}: no such folder")
        elif not is_dir and not path.is_file():
            out.append(f"{key}: {value}: no such file")
    return out


@register
def depth_codec(cfg: config.Config) -> list[str]:
    """The uplink stage refuses an unknown codec at start."""
    from depth.codec import get_codec, names

    try:
        get_codec(cfg.uplink.depth_codec)
    except ValueError:
        return [f"uplink.depth_codec: unknown codec {cfg.uplink.depth_codec!r} (known: {', '.join(names())})"]
    return []


@register
def redaction(cfg: config.Config) -> list[str]:
    """Model cards parse, files hash to their cards, each model proves it sees; policy layers respect the floor."""
    return checks.models(cfg.redact) + checks.policy(cfg.redact) if cfg.redact.enabled else []


@register
def pin_hash(cfg: config.Config) -> list[str]:
    """The console refuses a PIN hash it cannot parse (and would lock every operator out)."""
    return checks.pin_hash(cfg.console.pin_hash)


@register
def tls_files_are_pem(cfg: config.Config) -> list[str]:
    """TLS files must be PEM of the right kind (a TOML file or a DER blob fails only at connect time)."""
    return checks.pem(cfg.uplink)
