"""`crowdcap models list|verify [CARD...]`: show or check redaction model cards.

Without CARD, the shipped cards (faces, text detector and recogniser, persons; --config's [redact]
models replace the shipped face card) are used. `verify` hashes each model file against its card, loads
it and, for a detector with reference frames, runs it on them (it must find the known faces:
`redact/proof.py`): a wrong hash, a missing or corrupt file, a model that sees nothing is an error
naming the file (exit 2).
"""

from __future__ import annotations

import argparse
import json

from device.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list or verify redaction model cards", description=__doc__)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    for name, helptext in (("list", "show the model cards"), ("verify", "check hashes and load each model")):
        a = msub.add_parser(name, help=helptext)
        a.add_argument("cards", nargs="*", metavar="CARD", help="model card TOML (default: configured cards)")
        a.add_argument("--config", default=None, help="config TOML whose [redact] models to use")
        a.add_argument("--json", action="store_true", help="JSON output")
        a.set_defaults(func=run, verify=name == "verify")


def _card_paths(args: argparse.Namespace) -> list[str]:
    if args.cards:
        return list(args.cards)
    from device import config
    from redact.cards import shipped_card_paths

    # The configured face cards (or the shipped ones), and every other shipped card (text, persons).
    configured = list(config.load(args.config).redact.models)
    shipped = [str(p) for p in shipped_card_paths()]
    return configured + shipped[1:] if configured else shipped


def run(args: argparse.Namespace) -> int:
    from redact.cards import CardError, load_card

    rows = []
    errors = []
    for path in _card_paths(args):
        try:
            card = load_card(path)
        except CardError as e:
            errors.append(str(e))
            rows.append({"card": path, "ok": False, "error": str(e)})
            continue
        row = {"card": str(card.card_path), "name": card.name, "version": card.version, "decoder": card.decoder,
               "classes": list(card.classes), "file": str(card.file), "sha256": card.sha256,
               "license": card.license}
        if args.verify:
            err = _verify(card)
            row["ok"] = not err
            if err:
                row["error"] = err
                errors.append(err)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            if "name" not in r:
                continue
            status = "" if not args.verify else ("  ok" if r["ok"] else "  FAILED")
            print(f"{r['name']} {r['version']}  decoder={r['decoder']}  classes={','.join(r['classes'])}{status}\n"
                  f"  card: {r['card']}\n  file: {r['file']}\n  sha256: {r['sha256']}")
    if errors:
        raise CliError("; ".join(errors))
    return 0


def _verify(card: object) -> str:
    from redact.cards import CardError
    from redact.detector import Detector
    from redact.proof import prove
    from redact.runtime import ModelLoadError

    try:
        if getattr(card, "decoder", "") == "selfie":  # a segmenter: must find the astronaut in her box
            from redact.segment import prove_segmenter

            return prove_segmenter(card)
        if getattr(card, "decoder", "") == "ppocr_rec":
            from redact.recognizer import TextRecognizer

            TextRecognizer(card, threads=1)  # type: ignore[arg-type]
            return ""
        det = Detector(card, threads=1)  # type: ignore[arg-type]
    except (CardError, ModelLoadError) as e:
        return str(e)
    proof = prove(det)  # a model that loads but finds none of the reference faces is not ok
    return "" if proof["ok"] else str(proof["detail"])
