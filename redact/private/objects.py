"""Private objects by example: the wearer registers photos of a thing (house number, family photo,
badge, whiteboard); frames are searched for it and the matched region is redacted.

    store = ObjectStore(state_dir)                 # state_dir/private/objects/NAME/{object.json, 0.png, ...}
    store.add("family-photo", [Path("photo.jpg")], applies_to="both")
    matcher = ObjectMatcher(store.load(), features="sift", interval=6)
    hits = matcher.match(gray)                     # [ObjectHit(name, quad 4×2, inliers, held, tracked)]
    matcher.coverage()                             # {"coverage": "detected"|"held", "age": frames}

Matching is OpenCV local features (SIFT by default: ORB is faster but finds far fewer tilted or
distant views — see `bench privacy`) + a RANSAC homography: planar things are found at new poses,
scales and lighting with no model. The redacted region is the exemplar's outline projected by the
homography (a quad, grown by `margin`), not a loose box. Exemplar features are computed once per load.

The schedule and what it guarantees: a full search (SIFT over the whole frame, tens of CPU-ms) runs on
the first frame, every `interval` frames, and on the frame after a held object's optical flow was
lost. Between searches, matched objects are followed by optical flow near their last outline
(track.py, a few CPU-ms per object) with a margin growing per frame, and held at most `hold_frames` frames after a
search last matched them. An object that comes into view between two searches is NOT looked for until
the next search — at most `interval - 1` frames later; those frames say so (`coverage()`: `held`, with
the age of the last search; the manifest's `classes.private_object`). `interval = 1` (the config's
default) searches every frame: then every frame is `detected`. `python -m bench privacy` measures
precision, recall and CPU on held-out views, and per-frame recall on a walk where objects appear
between searches, side by side with the every-frame search.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from redact.private.common import (
    APPLIES_TO,
    PrivateError,
    atomic_json,
    check_name,
    name_hash,
    private_dir,
    read_json,
)
from redact.private.track import MAX_POINTS, HeldObject, corners_inside

EXEMPLAR_MAX_SIDE = 480
MAX_EXEMPLARS = 8
EXEMPLAR_SCALES = {"orb": (1.0, 0.5, 0.25), "sift": (1.0, 0.5)}
# SIFT layers per octave in the frame search. 2 (a quarter fewer Gaussian images) is 11-23 % cheaper per
# search and found as many held-out views (`bench privacy`), but with a third fewer inliers it missed the
# demo's distant photo on one search of 15 (84 of 90 frames covered instead of 90): OpenCV's 3 stays.
FRAME_OCTAVE_LAYERS = 3


@dataclass
class PrivateObject:
    name: str
    applies_to: str
    images: list[np.ndarray]  # BGR exemplars, longer side ≤ EXEMPLAR_MAX_SIDE
    added: float = 0.0

    @property
    def name_hash(self) -> str:
        return name_hash(self.name)


class ObjectStore:
    """Registered objects in the device's state folder (one folder per object)."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = private_dir(state_dir) / "objects"

    def add(self, name: str, images: list[Path], applies_to: str = "both", *, replace: bool = False) -> PrivateObject:
        check_name(name, "object")
        if applies_to not in APPLIES_TO:
            raise PrivateError(f"--applies-to: expected one of {', '.join(APPLIES_TO)}, got {applies_to!r}")
        if not images:
            raise PrivateError(f"object {name}: give at least one IMAGE of it")
        if len(images) > MAX_EXEMPLARS:
            raise PrivateError(f"object {name}: at most {MAX_EXEMPLARS} images, got {len(images)}")
        loaded = []
        for p in images:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise PrivateError(f"{p}: cannot read the image (not a jpg/png, or missing)")
            img = _fit(img)
            kp = _orb(2000).detect(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), None)
            if len(kp) < 40:
                raise PrivateError(f"{p}: only {len(kp)} distinctive points: too plain to be recognised "
                                   "(photograph the object closer, with its detail in view)")
            loaded.append(img)
        folder = self.dir / name
        if folder.exists() and not replace:
            raise PrivateError(f"object {name}: already registered (privacy remove {name} first)")
        tmp = self.dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i, img in enumerate(loaded):
            if not cv2.imwrite(str(tmp / f"{i}.png"), img):
                raise PrivateError(f"{tmp}: cannot write the exemplar")
        obj = PrivateObject(name, applies_to, loaded, time.time())
        atomic_json(tmp / "object.json", {"name": name, "applies_to": applies_to, "images": len(loaded),
                                          "added": obj.added})
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return obj

    def remove(self, name: str) -> bool:
        folder = self.dir / check_name(name, "object")
        if not folder.is_dir():
            return False
        shutil.rmtree(folder)
        return True

    def load(self) -> list[PrivateObject]:
        out = []
        if not self.dir.is_dir():
            return out
        for folder in sorted(p for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            meta = read_json(folder / "object.json", "private object")
            if not isinstance(meta, dict):
                raise PrivateError(f"{folder}: object.json missing; remove the folder or register it again")
            images = [cv2.imread(str(folder / f"{i}.png"), cv2.IMREAD_COLOR) for i in range(int(meta.get("images", 0)))]
            if not images or any(img is None for img in images):
                raise PrivateError(f"{folder}: an exemplar image is missing or unreadable; register the object again")
            out.append(PrivateObject(str(meta["name"]), str(meta.get("applies_to", "both")), images,
                                     float(meta.get("added", 0.0))))
        return out

    def list(self) -> list[dict[str, Any]]:
        return [{"name": o.name, "name_hash": o.name_hash, "applies_to": o.applies_to, "images": len(o.images)}
                for o in self.load()]


def _fit(img: np.ndarray, max_side: int = EXEMPLAR_MAX_SIDE) -> np.ndarray:
    s = max_side / max(img.shape[:2])
    return cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img


def _orb(n: int) -> Any:
    return cv2.ORB_create(nfeatures=n, scaleFactor=1.2, nlevels=8, edgeThreshold=15, patchSize=15, fastThreshold=10)


@dataclass
class _Exemplar:
    corners: np.ndarray  # 4×2 outline in exemplar pixels
    pts: np.ndarray  # N×2 keypoint positions
    desc: np.ndarray


@dataclass
class ObjectHit:
    name: str
    applies_to: str
    quad: np.ndarray  # 4×2 frame pixels (margin included)
    inliers: int
    held: int = 0  # frames since a full search last matched it (0 = matched in this frame)
    tracked: bool = False  # held and followed by optical flow on this frame (False: matched, or coasting)

    @property
    def name_hash(self) -> str:
        return name_hash(self.name)


class ObjectMatcher:
    """Finds registered objects in frames. Not thread-safe: one per redaction stage.

    The schedule (module contract): a full search of the whole frame on the first frame, then whenever
    `interval` frames have passed since the last one, and on the frame after any held object's flow
    was lost. In between, held objects are followed (track.py) and nothing else is looked for: an object
    that comes into view between two searches is found by the next one, at most `interval - 1` frames
    later. `coverage()` says which this frame had (manifest `classes.private_object`).
    """

    def __init__(self, objects: list[PrivateObject], features: str = "sift", *, min_inliers: int = 12,
                 ratio: float = 0.8, margin: float = 0.08, hold_frames: int = 5, margin_growth: float = 0.05,
                 frame_features: int = 1500, frame_scale: float = 1.0, interval: int = 1, track: bool = True,
                 track_margin_growth: float = 0.02, octave_layers: int = FRAME_OCTAVE_LAYERS) -> None:
        if features not in ("orb", "sift"):
            raise PrivateError(f"privacy.object_features: expected orb or sift, got {features!r}")
        self.features = features
        self.min_inliers = min_inliers
        self.ratio = ratio
        self.margin = margin
        self.hold_frames = hold_frames
        self.margin_growth = margin_growth  # per frame coasting blind (flow lost, or tracking off)
        self.track = track
        self.track_margin_growth = track_margin_growth  # per frame followed by flow
        self.frame_scale = frame_scale
        self.interval = max(1, interval)
        self.passes = 0  # full searches
        self.since_search: int | None = None  # frames since the last full search (None: none yet)
        self.stats: Counter[str] = Counter()  # searches, early searches, tracked / blind frames of held objects
        self._search_next = True
        self._prev: np.ndarray | None = None
        if features == "orb":
            self._frame_det = _orb(2 * frame_features)
            self._ex_det = _orb(2000)
            self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        else:
            self._frame_det = cv2.SIFT_create(nfeatures=frame_features, nOctaveLayers=octave_layers)
            self._ex_det = cv2.SIFT_create(nfeatures=2000)
            self._matcher = cv2.BFMatcher(cv2.NORM_L2)
        self.objects = objects
        self._exemplars: list[list[_Exemplar]] = [[self._prepare(img) for img in o.images] for o in objects]
        self._held: dict[str, HeldObject] = {}
        self.counts: dict[str, int] = {o.name_hash: 0 for o in objects}

    def _prepare(self, img: np.ndarray) -> _Exemplar:
        """Features of the exemplar at several sizes (ORB's own pyramid spans ~3.6×; a picture across
        a room is 10× smaller than its photo), in the exemplar's full-size pixel coordinates."""
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        pts_all, desc_all = [], []
        for s in EXEMPLAR_SCALES[self.features]:
            small = gray if s == 1.0 else cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            if min(small.shape) < 40:
                break
            kp, desc = self._ex_det.detectAndCompute(small, None)
            if desc is None:
                continue
            pts_all.append(np.array([k.pt for k in kp], np.float32).reshape(-1, 2) / s)
            desc_all.append(desc)
        pts = np.concatenate(pts_all) if pts_all else np.zeros((0, 2), np.float32)
        desc = np.concatenate(desc_all) if desc_all else None
        return _Exemplar(np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32), pts, desc)

    def reset(self) -> None:
        """Unrelated frames follow: forget what is held; the next frame gets a full search."""
        self._held.clear()
        self._prev = None
        self._search_next = True

    def coverage(self) -> dict[str, Any]:
        """This frame's coverage of private objects: `detected` (searched whole) or `held` (followed only;
        `age` frames since the last full search)."""
        age = self.since_search or 0
        return {"coverage": "detected" if age == 0 else "held", "age": age}

    def match(self, gray: np.ndarray) -> list[ObjectHit]:
        """Every registered object found (or held) in this grey frame."""
        if not self.objects:
            return []
        if self._prev is not None and self._prev.shape != gray.shape:  # another camera: nothing carries over
            self.reset()
        due = self._search_next or self.since_search is None or self.since_search + 1 >= self.interval
        found: dict[str, tuple[np.ndarray, np.ndarray, int]] = self._search(gray) if due else {}
        if due:
            self.stats["early_searches" if self._search_next and self.since_search is not None
                       and self.since_search + 1 < self.interval else "searches"] += 1
            self.passes += 1
            self.since_search, self._search_next = 0, False
        else:
            self.since_search = (self.since_search or 0) + 1
        hits: list[ObjectHit] = []
        for obj in self.objects:
            name = obj.name
            held = self._held.get(name)
            if name in found:
                outline, inlier_pts, n_in = found[name]
                pts = np.concatenate([inlier_pts, corners_inside(gray, outline)])[:MAX_POINTS]
                new = HeldObject(name, obj.applies_to, outline, pts, n_in)
                if held is not None:
                    new.velocity = ((outline.mean(0) - held.outline.mean(0)) / (held.age + 1)).astype(np.float32)
                self._held[name] = held = new
                self.counts[obj.name_hash] = self.counts.get(obj.name_hash, 0) + 1
            elif held is not None:
                followed = self.track and self._prev is not None and held.follow(self._prev, gray)
                if not followed:
                    if not self.track or self._prev is None:  # coasting by design: the schedule stands
                        held.age, held.blind = held.age + 1, held.blind + 1
                        held.outline = (held.outline + held.velocity).astype(np.float32)
                    elif held.blind == 1:  # the flow just lost it: look at the whole frame next frame (once:
                        self._search_next = True  # an object that left the view must not cost a search a frame)
                self.stats["tracked" if followed else "blind"] += 1
                if held.age > self.hold_frames:
                    del self._held[name]
                    continue
            else:
                continue
            hits.append(ObjectHit(name, obj.applies_to,
                                  held.quad(self.margin, self.track_margin_growth, self.margin_growth),
                                  held.inliers if held.age == 0 else 0, held.age, held.age > 0 and held.blind == 0))
        self._prev = gray if self._held else None
        return hits

    def _search(self, gray: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """The full search: name → (outline, inlier points, inliers) of every object found in the frame."""
        height, width = gray.shape
        s = self.frame_scale
        small = gray if s == 1.0 else cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        kp, desc = self._frame_det.detectAndCompute(small, None)
        found: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        if desc is None or len(kp) < self.min_inliers:
            return found
        fpts = np.array([k.pt for k in kp], np.float32) / s
        for obj, exemplars in zip(self.objects, self._exemplars, strict=True):
            best = None
            for ex in exemplars:
                got = self._match_one(ex, desc, fpts, width, height)
                if got is not None and (best is None or got[2] > best[2]):
                    best = got
            if best is not None:
                found[obj.name] = best
        return found

    def _match_one(self, ex: _Exemplar, desc: np.ndarray, fpts: np.ndarray, width: int,
                   height: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        if ex.desc is None or len(ex.desc) < 2:
            return None
        pairs = self._matcher.knnMatch(ex.desc, desc, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        if len(good) < self.min_inliers:
            return None
        src = ex.pts[[m.queryIdx for m in good]]
        dst = fpts[[m.trainIdx for m in good]]
        hom, inl = cv2.findHomography(src, dst, cv2.RANSAC, 5.0, maxIters=1000, confidence=0.995)
        if hom is None or inl is None:
            return None
        n_in = int(inl.sum())
        if n_in < self.min_inliers:
            return None
        quad = cv2.perspectiveTransform(ex.corners.reshape(-1, 1, 2), hom).reshape(4, 2)
        if not _plausible(quad, ex.corners, width, height):
            return None
        return quad.astype(np.float32), dst[inl.ravel() == 1].astype(np.float32), n_in


def _plausible(quad: np.ndarray, corners: np.ndarray, width: int, height: int) -> bool:
    """A real view of a plane: convex, not tiny, not absurdly large or thin, near the image."""
    if not np.all(np.isfinite(quad)) or not cv2.isContourConvex(quad.reshape(-1, 1, 2).astype(np.float32)):
        return False
    area = abs(cv2.contourArea(quad.astype(np.float32)))
    if area < 300 or area > 16 * width * height:
        return False
    sides = np.linalg.norm(quad - np.roll(quad, -1, axis=0), axis=1)
    if sides.min() < 8 or sides.max() / max(sides.min(), 1e-6) > 12:
        return False
    centre = quad.mean(0)
    return -width < centre[0] < 2 * width and -height < centre[1] < 2 * height
