"""Redaction actions on one colour region, in place. `drop_frame` is handled by the stage.

Each action takes a view of the region (h×w×3 uint8) and overwrites it. None is reversible, and
none keeps more detail for a bigger face: the region is first reduced to a fixed, small number of
cells across its longer side (`cells`), *whatever its size in pixels* — a 300-px face keeps no more
than a 30-px one. (Cells of a fixed pixel size, as before, kept a 30×30 image of a 300-px face:
recognisable, to a person and to a detector.)

  * `blur` (default): `BLUR_CELLS` cells, then the cell grid is hidden (smooth upsampling and a
    Gaussian of about one cell), so no block edges remain for a detector to read.
  * `pixelate`: a mosaic of `PIXELATE_CELLS` cells across (the blocks are its look).
  * `fill`: solid black.
  * `mask`: the strongest: cells plus noise — `MASK_CELLS` cells, per-cell random jitter, smoothed,
    with fresh grain every call, so not even the region's layout of light and dark survives.

`STRENGTHS` names the cell counts the bench measures ("detectable after redaction") per action.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Action = Callable[[np.ndarray], None]

BLUR_CELLS = 4
PIXELATE_CELLS = 5
MASK_CELLS = 3
MID = 8  # smoothing happens on a cells×MID image, then one linear upsample: cost ∝ region pixels

_rng = np.random.default_rng()
# The smoothing kernel, made once: cv2.GaussianBlur rebuilds its kernel and takes its bit-exact path on
# every call (0.13 CPU-ms on a 32×32 image, most of a face's paint); the same separable kernel through
# sepFilter2D costs 0.02 ms and differs by at most one level.
_KERNEL = cv2.getGaussianKernel(2 * MID + 1, MID / 2)


def grid(w: int, h: int, cells: int) -> tuple[int, int]:
    """(cells across, cells down): `cells` across the longer side, the other in proportion (≥ 1)."""
    if w >= h:
        return cells, max(1, round(cells * h / max(1, w)))
    return max(1, round(cells * w / max(1, h))), cells


def _smooth_up(small: np.ndarray, w: int, h: int) -> np.ndarray:
    """Upsample a cells image to w×h with no visible grid: linear to MID px per cell, a Gaussian of
    about half a cell there, then linear to the full size."""
    cy, cx = small.shape[:2]
    mid = cv2.resize(small, (cx * MID, cy * MID), interpolation=cv2.INTER_LINEAR)
    mid = cv2.sepFilter2D(mid, -1, _KERNEL, _KERNEL, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(mid, (w, h), interpolation=cv2.INTER_LINEAR)


def blur(roi: np.ndarray, cells: int = BLUR_CELLS) -> None:
    """A few cells across (whatever the size), grid hidden: a smooth wash of the region's colours."""
    h, w = roi.shape[:2]
    if not h or not w:
        return
    small = cv2.resize(roi, grid(w, h, cells), interpolation=cv2.INTER_AREA)
    roi[...] = _smooth_up(small, w, h)


def pixelate(roi: np.ndarray, cells: int = PIXELATE_CELLS) -> None:
    """A mosaic of `cells` blocks across the longer side."""
    h, w = roi.shape[:2]
    if not h or not w:
        return
    small = cv2.resize(roi, grid(w, h, cells), interpolation=cv2.INTER_AREA)
    roi[...] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def fill(roi: np.ndarray, cells: int = 0) -> None:
    """Solid black."""
    roi[...] = 0


def mask(roi: np.ndarray, cells: int = MASK_CELLS) -> None:
    """Cells plus noise: each cell's colour jittered (±40 levels), smoothed, plus fine grain."""
    h, w = roi.shape[:2]
    if not h or not w:
        return
    small = cv2.resize(roi, grid(w, h, cells), interpolation=cv2.INTER_AREA).astype(np.int16)
    small += _rng.integers(-40, 41, small.shape[:2], dtype=np.int16)[..., None]
    up = _smooth_up(np.clip(small, 0, 255).astype(np.uint8), w, h)
    grain = _rng.integers(-12, 13, (h, w, 1), dtype=np.int16)
    roi[...] = np.clip(up.astype(np.int16) + grain, 0, 255).astype(np.uint8)


ACTIONS: dict[str, Action] = {"blur": blur, "pixelate": pixelate, "fill": fill, "mask": mask}
ACTION_FUNCS: dict[str, Callable[[np.ndarray, int], None]] = {"blur": blur, "pixelate": pixelate, "fill": fill,
                                                             "mask": mask}
# Cell counts the bench measures per action (the default first).
STRENGTHS: dict[str, tuple[int, ...]] = {"blur": (BLUR_CELLS, 6, 8), "pixelate": (PIXELATE_CELLS, 8, 12),
                                         "fill": (0,), "mask": (MASK_CELLS, 5)}
