"""`crowdcap tags score|propose|check`: crowd tags (docs/tags.md) → numbers → a better, gated policy.

    crowdcap tags score TAGS --sessions DIR [--json] [--html tags.html]
    crowdcap tags propose TAGS --sessions DIR --policy CURRENT.toml -o NEW.toml [--json]
    crowdcap tags check NEW.toml --sessions DIR [--tags TAGS] [--current CURRENT.toml] [--json]

Backend tools: the code lives in uplink/backend/tags/ (device-side code never imports it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from device.cli import CliError


def _consensus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sessions", required=True, help="the ingest's OUT folder (<device>/<session>/frames.jsonl)")
    p.add_argument("--min-taggers", type=int, default=2, help="votes a region needs to be decided (default 2)")
    p.add_argument("--min-agreement", type=float, default=0.6,
                   help="share of votes the winning label needs (0.5-1, default 0.6; a tie is never decided)")
    p.add_argument("--cover", type=float, default=0.8,
                   help="share of a private region that must be redacted to count as covered (default 0.8)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad tag lines (listed on stderr) instead of refusing")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--config", default=None,
                   help="a device config: replays use its [redact] settings (detector sizes, tiles), as the device")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tags", help="crowd tags: score the devices, propose and check a new policy",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="tags_command", metavar="ACTION")
    s = tsub.add_parser("score", help="consensus, leaks, over-redaction, recall/precision per class and version")
    s.add_argument("tags", help="tags file (JSON Lines, docs/tags.md)")
    _consensus_args(s)
    s.add_argument("--html", default=None, help="write the page here (default: DIR/tags.html; '-' for none)")
    s.set_defaults(func=run_score)
    pr = tsub.add_parser("propose", help="derive a new policy version from the consensus (says why per change)")
    pr.add_argument("tags", help="tags file (JSON Lines, docs/tags.md)")
    _consensus_args(pr)
    pr.add_argument("--policy", required=True, help="the current policy TOML")
    pr.add_argument("-o", "--output", required=True, help="where to write the new policy TOML")
    pr.add_argument("--max-over-redaction", type=float, default=0.05,
                    help="bound on over-redaction per class when calibrating thresholds (default 0.05)")
    pr.add_argument("--version", dest="policy_version", default=None, help="version of the new policy")
    pr.set_defaults(func=run_propose)
    c = tsub.add_parser("check", help="replay the tagged frames with a policy; refuse a regression")
    c.add_argument("policy", help="the new policy TOML")
    c.add_argument("--tags", default=None, help="tags file (JSON Lines, docs/tags.md); default: DIR/tags.jsonl")
    _consensus_args(c)
    c.add_argument("--current", default=None,
                   help="the current policy TOML (default: what the devices did, from the manifests)")
    c.add_argument("--max-over-redaction", type=float, default=0.05, help="refuse above this (default 0.05)")
    c.set_defaults(func=run_check)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _redact_cfg(args: argparse.Namespace):
    if not args.config:
        return None
    from device import config as config_mod

    return config_mod.load(args.config).redact  # ConfigError names the key


def _load(args: argparse.Namespace, tags_path: str):
    from uplink.backend.tags import consensus
    from uplink.backend.tags.format import read_tags
    from uplink.backend.tags.sessions import Sessions

    if not 0 < args.cover <= 1:
        raise CliError(f"--cover: expected 0-1, got {args.cover}")
    tags, refused = read_tags(tags_path, skip_bad=args.skip_bad)
    for line in refused:
        print(f"crowdcap: skipped {line}", file=sys.stderr)
    if not tags:
        raise CliError(f"{tags_path}: no tags")
    cons = consensus.build(tags, min_taggers=args.min_taggers, min_agreement=args.min_agreement)
    return cons, Sessions(args.sessions)


def _user_errors(fn):  # TagError (bad tags, options, sessions): exit 2 with its message, no "internal error"
    def wrapped(args: argparse.Namespace) -> int:
        from uplink.backend.tags.format import TagError

        try:
            return fn(args)
        except TagError as e:
            raise CliError(str(e)) from None
    return wrapped


@_user_errors
def run_score(args: argparse.Namespace) -> int:
    from uplink.backend.tags.page import write_page
    from uplink.backend.tags.score import score, table

    cons, sessions = _load(args, args.tags)
    doc = score(cons, sessions, cover_min=args.cover)
    if args.html != "-":
        html_path = Path(args.html) if args.html else Path(args.sessions) / "tags.html"
        doc["page"] = str(write_page(html_path, doc, sessions))
    print(json.dumps(doc, indent=1) if args.json else table(doc) + (f"\npage: {doc['page']}" if "page" in doc else ""))
    return 0


@_user_errors
def run_propose(args: argparse.Namespace) -> int:
    from uplink.backend.tags.propose import propose

    cons, sessions = _load(args, args.tags)
    if not 0 <= args.max_over_redaction <= 1:
        raise CliError(f"--max-over-redaction: expected 0-1, got {args.max_over_redaction}")
    out = Path(args.output)
    doc = propose(cons, sessions, args.policy, max_over=args.max_over_redaction, cover_min=args.cover,
                  version=args.policy_version, exemplar_dir=out.with_name(out.stem + ".exemplars"),
                  redact_cfg=_redact_cfg(args))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(doc["toml"], encoding="utf-8")
    os.replace(tmp, out)
    doc["output"] = str(out)
    if args.json:
        print(json.dumps({k: v for k, v in doc.items() if k != "toml"}, indent=1))
    else:
        print(f"policy {doc['version']} (from {doc['from_version']}) written to {out}: {len(doc['changes'])} change(s)")
        for c in doc["changes"]:
            print(f"  + {c['why']}")
        for c in doc["not_emitted"]:
            print(f"  - {c['why']}")
        for a in doc["device_actions"]:
            print(f"  device-side: {a['why']}\n      {a['command']}")
        r = doc["replayed"]
        print(f"replayed with {doc['version']}: recall {r['recall']} ({r['covered']}/{r['private']}), "
              f"over-redaction {r['over_redaction']} ({r['over_redacted']}/{r['redacted']}); "
              f"gate it with: crowdcap tags check {out} --sessions {args.sessions} --tags {args.tags}")
    return 0


@_user_errors
def run_check(args: argparse.Namespace) -> int:
    from uplink.backend.tags.check import check, text

    tags = args.tags or str(Path(args.sessions) / "tags.jsonl")
    if not args.tags and not Path(tags).exists():
        raise CliError(f"no tags: give --tags FILE, or keep the crowd's tags in {tags}")
    cons, sessions = _load(args, tags)
    doc = check(cons, sessions, args.policy, current=args.current, max_over=args.max_over_redaction,
                cover_min=args.cover, redact_cfg=_redact_cfg(args))
    print(json.dumps(doc, indent=1) if args.json else text(doc))
    return 0 if doc["ok"] else 1
