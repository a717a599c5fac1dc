"""Private text in the synthetic scene: signs, a document on a desk, a screen, a runner's bib, plates.

Each object is a textured quad (rendered like every other quad of capture/scene.py) whose texture
is drawn here with a real font (Pillow's built-in FreeType font; nothing is downloaded), and which
knows where its private parts are (`labels`: class and rectangle as fractions of the texture), so
every frame carries their ground-truth boxes (`truth["private"]`, class → boxes) and the bench
measures recall per class. Classes: `text` (every line), `custom:document` (the page's text block),
`screen`, `custom:bib`, `person` (the runner), `plate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from capture.scene import _NEAR, Quad

Rect = tuple[float, float, float, float]


@dataclass
class LabeledQuad(Quad):
    labels: list[tuple[str, Rect]] = field(default_factory=list)


def _font(px: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=px)


def _draw(size: tuple[int, int], bg: tuple[int, int, int], lines: list[tuple[str, int, int, int, tuple[int, int, int]]]
          ) -> tuple[np.ndarray, list[Rect]]:
    """A BGR texture w×h with text lines (text, x, y, px, colour RGB) and each line's ink box (fractions)."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    boxes = []
    for text, x, y, px, colour in lines:
        f = _font(px)
        d.text((x, y), text, fill=colour, font=f)
        x1, y1, x2, y2 = d.textbbox((x, y), text, font=f)
        boxes.append((x1 / w, y1 / h, x2 / w, y2 / h))
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1]), boxes


def _union(rects: list[Rect]) -> Rect:
    return (min(r[0] for r in rects), min(r[1] for r in rects), max(r[2] for r in rects), max(r[3] for r in rects))


def _sign(text: str, bg: tuple[int, int, int], fg: tuple[int, int, int]) -> tuple[np.ndarray, list[tuple[str, Rect]]]:
    px = 64
    w = int(_font(px).getlength(text)) + 60
    tex, boxes = _draw((w, px + 50), bg, [(text, 30, 18, px, fg)])
    cv2.rectangle(tex, (4, 4), (w - 5, px + 45), fg[::-1], 3)
    return tex, [("text", boxes[0])]


def _document() -> tuple[np.ndarray, list[tuple[str, Rect]]]:
    lines = ["Tenancy agreement", "Jane Example", "Account 4411 0923", "Born 12.03.1988", "14 Park Lane"]
    tex, boxes = _draw((420, 560), (245, 243, 236),
                       [(s, 24, 40 + 80 * i, 40 if i else 44, (20, 20, 30)) for i, s in enumerate(lines)])
    return tex, [("custom:document", _union(boxes))] + [("text", b) for b in boxes]


def _screen(dark: bool = False) -> tuple[np.ndarray, list[tuple[str, Rect]]]:
    lines = ["Inbox (3)", "Your PIN is 4821", "Meeting 10:00"]
    bg, fg = ((32, 33, 36), (232, 234, 237)) if dark else ((250, 250, 252), (30, 30, 40))  # dark mode: light on dark
    panel, boxes = _draw((440, 260), bg, [(s, 24, 22 + 78 * i, 46, fg) for i, s in enumerate(lines)])
    tex = np.full((300, 480, 3), 12 if dark else 25, np.uint8)  # dark bezel around the panel
    tex[20:280, 20:460] = panel
    px = [(20 + b[0] * 440, 20 + b[1] * 260, 20 + b[2] * 440, 20 + b[3] * 260) for b in boxes]
    lab = [("screen", (20 / 480, 20 / 300, 460 / 480, 280 / 300))]
    return tex, lab + [("text", (x1 / 480, y1 / 300, x2 / 480, y2 / 300)) for x1, y1, x2, y2 in px]


def _runner() -> tuple[np.ndarray, list[tuple[str, Rect]], Rect]:
    """The astronaut photo (head and torso) wearing a race bib with a number."""
    from capture.scene import skimage_picture

    photo = skimage_picture("astronaut.png")  # 512×512 BGR, without skimage.data's scipy (~45 MB RSS)
    if photo is None:
        from skimage import data

        photo = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    bib, boxes = _draw((170, 120), (255, 255, 255), [("1047", 14, 18, 72, (10, 10, 10))])
    x0, y0 = 250, 330  # on the chest
    photo[y0:y0 + 120, x0:x0 + 170] = bib
    b = boxes[0]
    bib_rect = ((x0 + b[0] * 170) / 512, (y0 + b[1] * 120) / 512, (x0 + b[2] * 170) / 512, (y0 + b[3] * 120) / 512)
    face = (165 / 512, 55 / 512, 245 / 512, 160 / 512)
    return photo, [("custom:bib", bib_rect), ("text", bib_rect), ("person", (0.0, 0.06, 0.78, 1.0))], face


def _plate(text: str, eu: bool) -> tuple[np.ndarray, list[tuple[str, Rect]]]:
    w, h = 520, 110
    tex, boxes = _draw((w, h), (250, 250, 250), [(text, 70 if eu else 40, 12, 76, (15, 15, 15))])
    cv2.rectangle(tex, (3, 3), (w - 4, h - 4), (20, 20, 20), 4)
    if eu:
        tex[6:h - 6, 6:52] = (150, 50, 0)  # the blue EU band (BGR)
    return tex, [("plate", boxes[0]), ("text", boxes[0])]


def text_objects() -> list[Quad]:
    """The scene's private text objects (deterministic; world axes: x right, y down, z ahead)."""
    out: list[Quad] = []

    def add(o: list[float], r: list[float], d: list[float], made: Any, face: Rect | None = None) -> None:
        tex, labels = made[0], made[1]
        out.append(LabeledQuad(np.array(o, float), np.array(r, float), np.array(d, float), tex, face, labels=labels))

    sign = _sign("EXIT 12", (40, 140, 40), (255, 255, 255))
    add([-0.9, -1.05, 6.98], [0.9, 0, 0], [0, 0.9 * sign[0].shape[0] / sign[0].shape[1], 0], sign)
    sign2 = _sign("Room 204", (240, 240, 235), (20, 20, 80))
    add([2.98, -0.7, 3.6], [0, 0, 0.8], [0, 0.8 * sign2[0].shape[0] / sign2[0].shape[1], 0], sign2)
    # A document on a desk, leaning back 40° towards the ceiling, low at the left.
    tilt = np.deg2rad(40)
    add([-1.2, 0.55, 2.2], [0.5, 0, 0], [0, 0.66 * np.cos(tilt), 0.66 * np.sin(tilt)], _document())
    # A monitor on a high shelf at the right, showing mail.
    add([0.8, -0.95, 3.5], [0.75, 0, 0], [0, 0.47, 0], _screen())
    runner, labels, face = _runner()
    add([0.15, 0.12, 2.5], [0.65, 0, 0], [0, 0.65, 0], (runner, labels), face)
    # A car's rear (a plain panel) with an EU plate, and a US plate on the front of the left floor box.
    body = np.full((60, 80, 3), (40, 40, 120), np.uint8)
    add([-0.9, 0.9, 3.5], [0.8, 0, 0], [0, 0.6, 0], (body, []))
    add([-0.76, 1.25, 3.495], [0.52, 0, 0], [0, 0.11, 0], _plate("M AB 1234", eu=True))
    add([-1.86, 1.2, 3.195], [0.52, 0, 0], [0, 0.11, 0], _plate("7ABC123", eu=False))
    return out


def visible_private(renderer: Any, pose: np.ndarray, ids: np.ndarray, min_visible: float = 0.6) -> dict[str, list[list[int]]]:
    """Boxes [x1, y1, x2, y2] of every labelled private part at least `min_visible` unoccluded and in view."""
    w, h = renderer.intr.width, renderer.intr.height
    out: dict[str, list[list[int]]] = {}
    for qid, quad in enumerate(renderer.quads):
        for cls, rect in getattr(quad, "labels", ()):
            uv, z = renderer.project(quad.corners(rect), pose)
            if np.any(z < _NEAR):
                continue
            x1, y1 = uv.min(0)
            x2, y2 = uv.max(0)
            full = max((x2 - x1) * (y2 - y1), 1e-6)
            cx1, cy1, cx2, cy2 = int(max(x1, 0)), int(max(y1, 0)), int(min(np.ceil(x2), w)), int(min(np.ceil(y2), h))
            if cx2 - cx1 < 4 or cy2 - cy1 < 4:
                continue
            inside = (cx2 - cx1) * (cy2 - cy1)
            if inside / full < min_visible:
                continue
            if np.count_nonzero(ids[cy1:cy2, cx1:cx2] == qid) / inside >= min_visible:
                out.setdefault(cls, []).append([cx1, cy1, cx2, cy2])
    return out


def screen_stills(frames: list[np.ndarray], dark: bool, seed: int = 0) -> list[tuple[np.ndarray, list[int]]]:
    """Each frame (BGR) with a screen (dark mode or lit) pasted in perspective at a random place and
    size (1/4 to 1/2 of the frame's width), and the screen panel's ground-truth box [x1, y1, x2, y2]."""
    rng = np.random.default_rng(seed)
    tex, labels = _screen(dark)
    th, tw = tex.shape[:2]
    px1, py1, px2, py2 = labels[0][1]
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        sw = w * rng.uniform(0.25, 0.5)
        sh = sw * th / tw
        x0, y0 = rng.uniform(0, w - sw * 1.1), rng.uniform(0, h - sh * 1.1)
        skew = rng.uniform(-0.12, 0.12) * sh  # a panel seen a little from the side
        dst = np.float32([[x0, y0 + max(skew, 0)], [x0 + sw, y0 + max(-skew, 0)],
                          [x0 + sw, y0 + sh - max(-skew, 0)], [x0, y0 + sh - max(skew, 0)]])
        m = cv2.getPerspectiveTransform(np.float32([[0, 0], [tw, 0], [tw, th], [0, th]]), dst)
        img = frame.copy()
        warped = cv2.warpPerspective(tex, m, (w, h), flags=cv2.INTER_AREA)
        cover = cv2.warpPerspective(np.full((th, tw), 255, np.uint8), m, (w, h)) > 127
        img[cover] = warped[cover]
        panel = cv2.perspectiveTransform(np.float32([[[px1 * tw, py1 * th], [px2 * tw, py1 * th],
                                                      [px2 * tw, py2 * th], [px1 * tw, py2 * th]]]), m)[0]
        x1, y1 = np.floor(panel.min(0)).astype(int)
        x2, y2 = np.ceil(panel.max(0)).astype(int)
        out.append((img, [int(x1), int(y1), int(x2), int(y2)]))
    return out
