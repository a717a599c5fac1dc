"""Bench sets made of skimage's astronaut photo pasted onto the synthetic frames (ground truth: her face).

`astronaut_small`: a far face (9-16 px) walking or popping in; `astronaut_flash`: a large face in view
for only a couple of frames at a time (what the face bracket's frames between key frames may miss).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

FACE_IN_ASTRONAUT = (165, 55, 245, 160)  # the face in skimage's 512×512 astronaut photo (hand-measured)


def astronaut_small(backgrounds: list[Any], popin: bool) -> tuple[list[Any], list[list[list[float]]]]:
    """The astronaut photo pasted small (faces 9-16 px wide: far away) onto the synthetic frames.

    popin=False: one face walking across the view, 3 px per frame, slowly growing from 9 to 16 px.
    popin=True: the worst case, a small face (9-14 px) appears at a new place every 16 frames."""
    import skimage.data

    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    frames, faces = [], []
    n = len(backgrounds)
    for i, f in enumerate(backgrounds):
        if popin:
            k = i // 16  # not a multiple of any schedule period (3): pop-ins land on every phase
            fw = 9 + (k * 7) % 6
            x, y = 40 + (k * 211) % 520, 80 + (k * 97) % 300
        else:
            fw = 9 + 7 * i / max(1, n - 1)
            x, y = 20 + (3 * i) % 560, 200 + int(20 * np.sin(i / 15))
        s = fw / (FACE_IN_ASTRONAUT[2] - FACE_IN_ASTRONAUT[0])
        size = int(round(512 * s))
        color = f.color.copy()
        x = min(x, color.shape[1] - size)  # the photo around the face is larger than the face
        y = min(y, color.shape[0] - size)
        color[y:y + size, x:x + size] = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)
        frames.append(f.replace(color=color))
        fx1, fy1, fx2, fy2 = FACE_IN_ASTRONAUT
        faces.append([[x + fx1 * s, y + fy1 * s, x + fx2 * s, y + fy2 * s]])
    return frames, faces


def astronaut_flash(backgrounds: list[Any], visible: int = 2) -> tuple[list[Any], list[list[list[float]]]]:
    """A large face (48-96 px) that comes *and goes* within `visible` frames, at a new place every 16
    frames, starting on every phase of a key-frame schedule (a person passing close and fast): what
    the face bracket's frames between key frames may miss unless a pass looks at them."""
    import skimage.data

    crop = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)[0:256, 80:336]  # head and shoulders
    fx1, fy1, fx2, fy2 = (FACE_IN_ASTRONAUT[0] - 80, FACE_IN_ASTRONAUT[1], FACE_IN_ASTRONAUT[2] - 80,
                          FACE_IN_ASTRONAUT[3])
    frames, faces = [], []
    for i, f in enumerate(backgrounds):
        k = i // 16
        start = 16 * k + 3 + k % 4
        if not start <= i < start + visible:
            frames.append(f)
            faces.append([])
            continue
        fw = 48 + (k * 16) % 56
        s = fw / (fx2 - fx1)
        size = int(round(256 * s))
        color = f.color.copy()
        x = min(20 + (k * 173) % 500, color.shape[1] - size)
        y = min(10 + (k * 89) % 200, color.shape[0] - size)
        color[y:y + size, x:x + size] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        frames.append(f.replace(color=color))
        faces.append([[x + fx1 * s, y + fy1 * s, x + fx2 * s, y + fy2 * s]])
    return frames, faces
