"""Typed access to a card's [decoder_options] table; errors name the card and the option."""

from __future__ import annotations

import math
from typing import Any

from redact.cards import CardError, ModelCard


def number(card: ModelCard, key: str, default: float, lo: float, hi: float) -> float:
    v: Any = card.options.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
        raise CardError(f"{card.card_path}: decoder_options.{key}: expected a number {lo}-{hi}, got {v!r}")
    return float(v)


def text(card: ModelCard, key: str, default: str, choices: tuple[str, ...] = ()) -> str:
    v: Any = card.options.get(key, default)
    if not isinstance(v, str) or (choices and v not in choices):
        what = f"one of {', '.join(choices)}" if choices else "a string"
        raise CardError(f"{card.card_path}: decoder_options.{key}: expected {what}, got {v!r}")
    return v
