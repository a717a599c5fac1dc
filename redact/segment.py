"""Person masks: an opt-in refinement *inside* person boxes, never a detector of its own.

A policy rule `class = "person"` with `shape = "mask"` asks that only the person's pixels in each
person box be redacted, leaving the rest of the box (the street behind them) untouched. The mask
comes from MediaPipe's selfie/person segmenter (redact/models/selfie_segmentation.onnx, converted by
tools/convert_selfie.sh); it runs only on crops of boxes a person detector (or the face→body rule)
produced, because on its own it calls a cat "person".

Fail closed — a mask is tighter than its box, so a mask that misses a limb leaks it:
  * the mask is a probability ≥ `mask_threshold` (0.3, lower than the usual 0.5: pixels the model is
    unsure about count as person), then dilated by `mask_dilate` (0.12) of the box's longer side (≥ 3 px), and its
    holes are filled (a bib or a badge on the chest is enclosed by the body, whatever the model says);
  * the region falls back to the whole box (`shape` stays "box", `mask_fallback` says why, counted
    in `counts()`) when the segmenter is missing or faults (`fault`), when this frame's segmenter time
    is spent (`budget`: the remaining persons of the frame get boxes), or when the mask covers less
    than `mask_min_fill` of the box (`small`: a person box whose segment is that small is implausible);
  * depth: the same mask is zeroed when the rule applies to depth.
The manifest says `"shape": "mask"` on a masked region and keeps its bbox; the mask bits themselves
never leave this module (they outline a private thing).

    masks = refine(frame.color, regions, policy)    # {region index: bool h×w of its bbox}
    for i, r in enumerate(regions):
        paint(color, depth, r, masks.get(i))
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from redact.actions import ACTIONS
from redact.cards import ModelCard, load_card, read_verified, shipped_card

log = logging.getLogger("crowdcap.redact")

# Defaults of the `[redact] mask_*` settings (redact/config.py; validated there, errors name the key).
THRESHOLD = 0.3      # person probability (the model's 0.5 leaves soft edges out)
DILATE = 0.12        # of the box's longer side, on every side of the mask
CONTEXT = 0.15       # of the box added around the crop the model sees (clipped to the frame)
MIN_FILL = 0.12      # a mask covering less of its box than this is implausible: whole box
FRAME_MS = 40.0      # segmenter time per frame; persons beyond it get their whole box


@dataclass(frozen=True)
class MaskSettings:
    threshold: float = THRESHOLD
    dilate: float = DILATE
    context: float = CONTEXT
    min_fill: float = MIN_FILL
    frame_ms: float = FRAME_MS


_settings = MaskSettings()


def configure(cfg: Any) -> MaskSettings:
    """Take the `[redact] mask_*` settings of a (validated) RedactConfig for this process's masks.
    Called by the forms schedule when a stage is built or its policy reloads."""
    global _settings
    _settings = MaskSettings(threshold=cfg.mask_threshold, dilate=cfg.mask_dilate, context=cfg.mask_context,
                             min_fill=cfg.mask_min_fill, frame_ms=cfg.mask_frame_ms)
    return _settings


def settings() -> MaskSettings:
    return _settings


class Segmenter:
    """The selfie segmenter (ONNX, NHWC float [0, 1] in, person probability out)."""

    def __init__(self, card: ModelCard) -> None:
        import onnxruntime as ort

        self.card = card
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(read_verified(card), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.size = card.input.size or (256, 256)  # (w, h)

    def probability(self, crop_rgb: np.ndarray) -> np.ndarray:
        """Person probability (float32, crop's h×w) of an RGB uint8 crop."""
        w, h = self.size
        x = cv2.resize(crop_rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        x = (x - self.card.input.mean) * self.card.input.scale
        out = self.session.run(None, {self.input: x[None]})[0]
        p = np.asarray(out, np.float32).reshape(h, w)
        if not np.isfinite(p).all():
            raise ValueError("segmenter output contains NaN or infinity")
        return cv2.resize(p, (crop_rgb.shape[1], crop_rgb.shape[0]), interpolation=cv2.INTER_LINEAR)

    def mask(self, color_bgr: np.ndarray, bbox: list[int], st: MaskSettings | None = None) -> np.ndarray:
        """Dilated person mask (bool, bbox h×w) of the box `bbox` = x1, y1, x2, y2 in a BGR frame."""
        st = st or _settings
        x1, y1, x2, y2 = bbox
        bw, bh = x2 - x1, y2 - y1
        fh, fw = color_bgr.shape[:2]
        cx1, cy1 = max(0, int(x1 - st.context * bw)), max(0, int(y1 - st.context * bh))
        cx2, cy2 = min(fw, int(x2 + st.context * bw)), min(fh, int(y2 + st.context * bh))
        crop = cv2.cvtColor(color_bgr[cy1:cy2, cx1:cx2], cv2.COLOR_BGR2RGB)
        person = (self.probability(crop) >= st.threshold).astype(np.uint8)
        r = max(3, round(st.dilate * max(bw, bh)))
        # Dilation by r as a distance transform: its cost does not grow with r (an r = 58 ellipse did).
        person = (cv2.distanceTransform(1 - person, cv2.DIST_L2, 3) <= r).astype(np.uint8)
        return fill_holes(person[y1 - cy1:y2 - cy1, x1 - cx1:x2 - cx1])


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask (uint8 0/1) with every hole — background the box's border cannot reach — made
    person: a bib, a badge or a phone held to the chest is enclosed by the body but may not look
    like a person to the segmenter."""
    h, w = mask.shape
    outside = np.zeros((h + 2, w + 2), np.uint8)
    outside[1:-1, 1:-1] = mask
    flood = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(outside, flood, (0, 0), 2)  # the padded border ring connects every edge pixel
    return outside[1:-1, 1:-1] != 2


_lock = threading.Lock()
_segmenter: Segmenter | None = None
_load_error = ""
_counts: Counter[str] = Counter()


def segmenter() -> Segmenter | None:
    """The shipped segmenter, loaded once (None, counted as `fault`, when it cannot be loaded)."""
    global _segmenter, _load_error
    with _lock:
        if _segmenter is None and not _load_error:
            try:
                _segmenter = Segmenter(load_card(shipped_card("selfie_segmentation")))
            except Exception as e:  # a missing or corrupt model: boxes, not a crash
                _load_error = f"{type(e).__name__}: {e}"
                log.error("person segmenter not loaded, person rules with shape = \"mask\" redact whole boxes: %s",
                          _load_error)
        return _segmenter


def wants_mask(policy: Any) -> bool:
    rule = policy.rule_for("person")
    return rule is not None and getattr(rule, "shape", "box") == "mask"


COVERED = np.zeros((0, 0), bool)  # "paint nothing": the region lies inside one painted at least as strongly
_STRENGTH = {"pixelate": 1, "blur": 2, "fill": 3}  # redact.floor.ACTION_STRENGTH, without drop_frame
_LAYERS = {"color": {"color"}, "depth": {"depth"}, "both": {"color", "depth"}}


def covered(regions: list[dict[str, Any]], masked: set[int]) -> list[int]:
    """Regions whose box lies inside another region's box that is painted whole (not masked), with an
    action at least as strong (an action reduces its region to a fixed number of cells across, so a
    bigger container leaves the inner box no more detail) on at least the same layers. Painting them
    too changes no pixel's privacy, only the cost: "everything private" frames carry ~40 regions —
    text lines inside documents and screens, bibs inside persons. Identical boxes: the strongest is
    painted, the first of equals."""
    n = len(regions)
    if n < 2:
        return []
    b = np.array([r["bbox"] for r in regions], np.float64).reshape(n, 4)
    strength = np.array([_STRENGTH.get(r["action"], -1) for r in regions])
    inside = ((b[:, None, 0] >= b[None, :, 0]) & (b[:, None, 1] >= b[None, :, 1])
              & (b[:, None, 2] <= b[None, :, 2]) & (b[:, None, 3] <= b[None, :, 3]))  # [i, j]: i inside j
    ok = inside & (strength[None, :] >= strength[:, None]) & (strength[:, None] >= 0)
    same = (b[:, None, :] == b[None, :, :]).all(axis=2)
    first = np.arange(n)[None, :] < np.arange(n)[:, None]
    ok &= ~same | (strength[None, :] > strength[:, None]) | first  # identical boxes: the strongest, then the first
    np.fill_diagonal(ok, False)
    if masked:
        ok[:, sorted(masked)] = False
    out = []
    for i in np.nonzero(ok.any(axis=1))[0]:
        need = _LAYERS.get(regions[i]["applies_to"], {"color", "depth"})
        if any(need <= _LAYERS.get(regions[j]["applies_to"], set()) for j in np.nonzero(ok[i])[0]):
            out.append(int(i))
    return out


def refine(color: np.ndarray, regions: list[dict[str, Any]], policy: Any,
           seg: Segmenter | None = None, frame_ms: float | None = None) -> dict[int, np.ndarray]:
    """Masks for the person regions of a policy whose person rule has `shape = "mask"` (sets `shape`,
    and `mask_fallback` when the whole box is kept, on those regions), and `COVERED` (paint nothing)
    for regions that lie inside another region painted whole at least as strongly (`covered`)."""
    masks = _person_masks(color, regions, policy, seg, frame_ms)
    for i in covered(regions, set(masks)):
        masks.setdefault(i, COVERED)
    return masks


def _person_masks(color: np.ndarray, regions: list[dict[str, Any]], policy: Any,
                  seg: Segmenter | None, frame_ms: float | None) -> dict[int, np.ndarray]:
    if not wants_mask(policy):
        return {}
    people = [i for i, r in enumerate(regions) if r["class"] == "person" and r["action"] != "drop_frame"]
    if not people:
        return {}
    seg = seg or segmenter()
    st = _settings
    frame_ms = st.frame_ms if frame_ms is None else frame_ms
    masks: dict[int, np.ndarray] = {}
    t0 = time.perf_counter()
    for i in people:
        r = regions[i]
        r["shape"] = "box"
        x1, y1, x2, y2 = r["bbox"]
        why = ""
        if seg is None:
            why = "fault"
        elif (time.perf_counter() - t0) * 1000.0 > frame_ms:
            why = "budget"
        else:
            try:
                m = seg.mask(color, r["bbox"], st)
                if m.shape != (y2 - y1, x2 - x1):
                    raise ValueError(f"mask shape {m.shape} for box {r['bbox']}")
            except Exception:  # the box is still redacted whole: nothing leaks
                why = "fault"
            else:
                if m.mean() < st.min_fill:
                    why = "small"
                else:
                    masks[i] = m
                    r["shape"] = "mask"
        with _lock:
            _counts[f"mask_{why}" if why else "mask"] += 1
        if why:
            r["mask_fallback"] = why
    return masks


def paint(color: np.ndarray, depth: np.ndarray, r: dict[str, Any], m: np.ndarray | None = None) -> None:
    """Apply region `r`'s action to its bbox in place — only on `m`'s pixels when a mask is given;
    nothing for `COVERED` (an empty mask: another region paints it at least as strongly)."""
    if m is not None and m.size == 0:
        return
    x1, y1, x2, y2 = r["bbox"]
    if r["applies_to"] in ("color", "both"):
        roi = color[y1:y2, x1:x2]
        if m is None:
            ACTIONS[r["action"]](roi)
        else:
            done = roi.copy()
            ACTIONS[r["action"]](done)
            np.copyto(roi, done, where=m[..., None])
    if r["applies_to"] in ("depth", "both"):
        if m is None:
            depth[y1:y2, x1:x2] = 0
        else:
            depth[y1:y2, x1:x2][m] = 0


def counts() -> dict[str, Any]:
    """Masks made (`mask`) and fallbacks to the whole box by reason (`mask_small`, `mask_fault`,
    `mask_budget`), for this process (status `person_masks`)."""
    with _lock:
        out: dict[str, Any] = dict(_counts)
        if _segmenter is not None:
            out["model"] = _segmenter.card.model_id
        if _load_error:
            out["load_error"] = _load_error
        return out


def astronaut() -> tuple[np.ndarray, list[int], list[int]]:
    """A real photo (scikit-image's astronaut, BGR), a person box on it and her face box inside it."""
    from capture.scene import skimage_picture

    photo = skimage_picture("astronaut.png")  # without skimage.data's scipy/PIL imports (~45 MB of RSS)
    if photo is None:
        from skimage import data

        photo = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    return photo, [0, 30, 400, 512], [165, 55, 245, 160]


def prove_segmenter(card: ModelCard) -> str:
    """"" when the segmenter loads and, in the astronaut's person box, masks her face and leaves part
    of the box alone; otherwise what is wrong (for `crowdcap models verify`)."""
    try:
        seg = Segmenter(card)
        photo, box, face = astronaut()
        m = seg.mask(photo, box)
    except Exception as e:
        return f"{card.card_path}: {type(e).__name__}: {e}"
    fx1, fy1, fx2, fy2 = (face[0] - box[0], face[1] - box[1], face[2] - box[0], face[3] - box[1])
    on_face, fill = float(m[fy1:fy2, fx1:fx2].mean()), float(m.mean())
    if on_face < 0.95 or not MIN_FILL <= fill < 0.98:
        return (f"{card.card_path}: the segmenter masks {on_face:.0%} of the astronaut's face and {fill:.0%} "
                "of her box (expected ≥ 95 % and part of the box)")
    return ""
