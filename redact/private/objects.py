"""Private objects by example: the wearer registers photos of a thing (house number, family photo,
badge, whiteboard); every frame is searched for it and the matched region is redacted.

    store = ObjectStore(state_dir)                 # state_dir/private/objects/NAME/{object.json, 0.png, ...}
    store.add("family-photo", [Path("photo.jpg")], applies_to="both")
    matcher = ObjectMatcher(store.load(), features="orb")
    hits = matcher.match(gray)                     # [ObjectHit(name, quad 4×2, inliers, held)]

Matching is OpenCV local features (SIFT by default: ORB is faster but finds far fewer tilted or
distant views — see `bench privacy`) + a RANSAC homography: planar things
are found at new poses, scales and lighting with no model. The redacted region is the exemplar's outline
projected by the homography (a quad, grown by `margin`), not a loose box. A match is held for
`hold_frames` frames after it was last seen, growing, so one missed frame does not let it slip through.
Frame features are computed once per frame for all objects; `python -m bench privacy` measures
precision, recall and time per frame on held-out synthetic views.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
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

EXEMPLAR_MAX_SIDE = 480
MAX_EXEMPLARS = 8
EXEMPLAR_SCALES = {"orb": (1.0, 0.5, 0.25), "sift": (1.0, 0.5)}


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
    held: int = 0  # frames since last matched (0 = matched in this frame)

    @property
    def name_hash(self) -> str:
        return name_hash(self.name)


@dataclass
class _Held:
    hit: ObjectHit
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))


class ObjectMatcher:
    """Finds registered objects in frames. Not thread-safe: one per redaction stage."""

    def __init__(self, objects: list[PrivateObject], features: str = "sift", *, min_inliers: int = 12,
                 ratio: float = 0.8, margin: float = 0.08, hold_frames: int = 5, margin_growth: float = 0.05,
                 frame_features: int = 1500, frame_scale: float = 1.0, interval: int = 1) -> None:
        if features not in ("orb", "sift"):
            raise PrivateError(f"privacy.object_features: expected orb or sift, got {features!r}")
        self.features = features
        self.min_inliers = min_inliers
        self.ratio = ratio
        self.margin = margin
        self.hold_frames = hold_frames
        self.margin_growth = margin_growth
        self.frame_scale = frame_scale
        self.interval = max(1, interval)
        self._tick = 0
        self.passes = 0
        if features == "orb":
            self._frame_det = _orb(2 * frame_features)
            self._ex_det = _orb(2000)
            self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        else:
            self._frame_det = cv2.SIFT_create(nfeatures=frame_features)
            self._ex_det = cv2.SIFT_create(nfeatures=2000)
            self._matcher = cv2.BFMatcher(cv2.NORM_L2)
        self.objects = objects
        self._exemplars: list[list[_Exemplar]] = [[self._prepare(img) for img in o.images] for o in objects]
        self._held: dict[str, _Held] = {}
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
        self._held.clear()

    def match(self, gray: np.ndarray) -> list[ObjectHit]:
        """Every registered object found (or held) in this grey frame."""
        if not self.objects:
            return []
        self._tick += 1
        if self.interval > 1 and (self._tick - 1) % self.interval and self._held:
            return self._hold(set())  # not this frame: what was seen moves on and grows
        self.passes += 1
        height, width = gray.shape
        s = self.frame_scale
        small = gray if s == 1.0 else cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        kp, desc = self._frame_det.detectAndCompute(small, None)
        hits: list[ObjectHit] = []
        if desc is not None and len(kp) >= self.min_inliers:
            fpts = np.array([k.pt for k in kp], np.float32) / s
            for obj, exemplars in zip(self.objects, self._exemplars, strict=True):
                best = None
                for ex in exemplars:
                    found = self._match_one(ex, desc, fpts, width, height)
                    if found is not None and (best is None or found[1] > best[1]):
                        best = found
                if best is not None:
                    hits.append(ObjectHit(obj.name, obj.applies_to, _grow(best[0], self.margin), best[1]))
        seen = {h.name for h in hits}
        for hit in hits:
            old = self._held.get(hit.name)
            vel = np.zeros(2) if old is None else (hit.quad.mean(0) - old.hit.quad.mean(0)) / (old.hit.held + 1)
            self._held[hit.name] = _Held(hit, vel)
            self.counts[hit.name_hash] = self.counts.get(hit.name_hash, 0) + 1
        return hits + self._hold(seen)

    def _hold(self, seen: set[str]) -> list[ObjectHit]:
        hits = []
        for name, held in list(self._held.items()):
            if name in seen:
                continue
            age = held.hit.held + 1
            if age > self.hold_frames:
                del self._held[name]
                continue
            quad = _grow(held.hit.quad + held.velocity, self.margin_growth)
            held.hit = ObjectHit(name, held.hit.applies_to, quad.astype(np.float32), 0, age)
            hits.append(held.hit)
        return hits

    def _match_one(self, ex: _Exemplar, desc: np.ndarray, fpts: np.ndarray, width: int,
                   height: int) -> tuple[np.ndarray, int] | None:
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
        return quad.astype(np.float32), n_in


def _grow(quad: np.ndarray, fraction: float) -> np.ndarray:
    centre = quad.mean(0)
    return (centre + (quad - centre) * (1.0 + 2.0 * fraction)).astype(np.float32)


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
