"""A detection's fault as the FrameWithheld it means (re-exported by redact.stage)."""

from __future__ import annotations

from capture.frame import FrameWithheld
from redact.decoders import ModelGarbage
from redact.runtime import ModelRunError


def as_withheld(e: Exception) -> FrameWithheld:
    """Any fault of a detection as the FrameWithheld it means (the frame cannot be vouched for)."""
    if isinstance(e, FrameWithheld):
        return e
    if isinstance(e, ModelRunError):
        return FrameWithheld(e.reason, e.detail)
    if isinstance(e, ModelGarbage):
        return FrameWithheld("model_garbage", str(e))
    return FrameWithheld("model_error", f"{type(e).__name__}: {e}")
