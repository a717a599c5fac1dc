"""`crowdcap config check FILE` / `show [--config FILE]` / `reference`."""

from __future__ import annotations

import argparse
import json

from device import config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check or show the config", description=__doc__)
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = csub.add_parser("check", help="validate a config file; errors name the key")
    check.add_argument("file")
    check.set_defaults(func=run_check)
    show = csub.add_parser("show", help="print the effective config as JSON (secrets masked)")
    show.add_argument("--config", dest="file", default=None, help="config TOML (default: built-in defaults)")
    show.set_defaults(func=run_show)
    ref = csub.add_parser("reference", help="print every key with its type, default and meaning (Markdown)")
    ref.set_defaults(func=run_reference)


def run_check(args: argparse.Namespace) -> int:
    """Every check `run` makes at start; all problems at once, one per line (exit 2), or 'ok'."""
    import sys

    from device.configcheck import check_file

    problems = check_file(args.file)
    if problems:  # the service would stop at start on each of these: say so now, all at once
        print(f"crowdcap: error: {args.file}: {len(problems)} problem{'s' if len(problems) > 1 else ''}",
              file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    print(f"{args.file}: ok")
    return 0


def missing_files(cfg: config.Config) -> list[str]:
    """Files and folders the config names that are not there (kept for callers; see device.configcheck)."""
    from device.configcheck import missing_files as check

    return check(cfg)


def run_show(args: argparse.Namespace) -> int:
    cfg = config.load(args.file)
    shown = config.show(cfg)
    if cfg.redact.enabled:  # floor ∪ fleet ∪ wearer, each rule with the layer it came from
        from redact.layers import PolicyLayers, describe

        shown["effective_policy"] = describe(PolicyLayers.from_config(cfg.redact).load())[0]
    print(json.dumps(shown, indent=2))
    return 0


def run_reference(args: argparse.Namespace) -> int:
    print(reference_markdown())
    return 0


def reference_markdown() -> str:
    """A Markdown table of every config key (the README embeds it; a test keeps them equal)."""
    import dataclasses
    import typing

    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    root = config.Config()
    for section in dataclasses.fields(root):
        obj = getattr(root, section.name)
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            hint = str(hints[f.name]).replace("typing.", "").replace("<class '", "").replace("'>", "")
            default = "***" if f.metadata.get("secret") else json.dumps(getattr(obj, f.name))
            meaning = f.metadata.get("help", "")
            if f.metadata.get("live"):
                meaning += " (applied live)"
            cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
            rows.append(f"| `{section.name}.{f.name}` | {cell(hint)} | `{cell(default)}` | {cell(meaning)} |")
    return "\n".join(rows)
