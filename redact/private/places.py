"""Where am I in a place the wearer has marked? The pose that privacy volumes need, before redaction.

The decision (docs/ARCHITECTURE.md): the pose is estimated on the raw frame, in memory, inside the
redaction stage — nothing raw is stored or sent, and no stage reaches back up the pipeline. It uses
`depth.odometry`'s tracker as a library (a few ms per frame) and runs only while the wearer has volumes
or is marking one.

A *place* is a map frame plus keyframes stored in the state folder (ORB descriptors with their 3D
points in the place's coordinates: no pixels). A new session relocalises against them (ORB matches +
PnP RANSAC) before it can place any volume; tracking then continues with odometry from that pose, and
new keyframes are added as the wearer moves. `PoseState` tells the caller how far to trust the pose:
measured (`ok`), predicted for `lost` frames (grow margins; withhold after a while), or unknown
(`resembles` says whether the frame looks like a known place).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from capture.frame import Intrinsics, RGBDFrame
from depth.odometry import Odometry, OdometryOptions, rotation_angle_deg
from redact.private.common import PrivateError, private_dir

MAX_KEYFRAMES = 40
RELOC_MIN_INLIERS = 25
RESEMBLANCE_MATCHES = 30


@dataclass
class PlaceKeyframe:
    pose: np.ndarray  # camera-to-place
    desc: np.ndarray  # N×32 uint8 ORB
    world: np.ndarray  # N×3 float32, place coordinates


@dataclass
class Place:
    id: str
    keyframes: list[PlaceKeyframe] = field(default_factory=list)
    dirty: bool = False

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for i, kf in enumerate(self.keyframes):
            arrays[f"pose{i}"], arrays[f"desc{i}"], arrays[f"world{i}"] = kf.pose, kf.desc, kf.world
        tmp = folder / f".{self.id}.tmp.npz"
        with tmp.open("wb") as fh:
            np.savez(fh, n=np.array(len(self.keyframes)), **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / f"{self.id}.npz")
        self.dirty = False

    @classmethod
    def load(cls, path: Path) -> Place:
        try:
            with np.load(path) as z:
                n = int(z["n"])
                kfs = [PlaceKeyframe(z[f"pose{i}"], z[f"desc{i}"], z[f"world{i}"]) for i in range(n)]
        except (OSError, ValueError, KeyError) as e:
            raise PrivateError(f"{path}: place keyframes unreadable ({e}); mark the volumes of this place again") \
                from None
        return cls(path.stem, kfs)


def _gray(frame: RGBDFrame) -> np.ndarray:
    return cv2.cvtColor(frame.color, cv2.COLOR_BGR2GRAY)


def places_dir(state_dir: str | Path) -> Path:
    return private_dir(state_dir) / "places"


def load_places(state_dir: str | Path) -> dict[str, Place]:
    folder = places_dir(state_dir)
    if not folder.is_dir():
        return {}
    return {p.stem: Place.load(p) for p in sorted(folder.glob("*.npz")) if not p.name.startswith(".")}


def new_place_id() -> str:
    return f"place-{uuid.uuid4().hex[:12]}"


@dataclass
class PoseState:
    pose: np.ndarray | None  # camera-to-place (predicted when not ok), None when not localised
    place: str | None
    ok: bool
    lost: int = 0  # consecutive frames the pose was only predicted
    resembles: bool = False  # not localised, but the frame matches a known place's keyframes
    relocalised: bool = False


class PoseKeeper:
    """Per-frame pose in a known place. Not thread-safe: the redaction stage's thread calls `track`."""

    def __init__(self, places: dict[str, Place], folder: Path | None) -> None:
        self.places = places
        self.folder = folder
        self._orb = cv2.ORB_create(nfeatures=1000, fastThreshold=12)
        self._bf = cv2.BFMatcher(cv2.NORM_HAMMING)
        self.odometry: Odometry | None = None
        self.place: str | None = None
        self.segment = 0
        self.lost = 0
        self.last_ok_pose: np.ndarray | None = None
        self._anchor_new = False
        self._camera: tuple[Intrinsics, float] | None = None
        self._rr = 0  # round-robin over keyframes while relocalising
        self._last_save = 0.0
        self._last: tuple[tuple[str, int, int], PoseState] | None = None
        self.counters = {"relocalised": 0, "lost_frames": 0, "keyframes_added": 0}

    def anchor_new_place(self) -> None:
        """The next frame starts a new place at its own pose (marking a volume where no place is known)."""
        self._anchor_new = True

    def track(self, frame: RGBDFrame) -> PoseState:
        """The pose of this frame (asking twice for the same frame returns the same answer)."""
        key = (frame.session_id, frame.seq, frame.t_mono_ns)
        if self._last is not None and self._last[0] == key and not self._anchor_new:
            return self._last[1]
        state = self._track(frame)
        self._last = (key, state)
        return state

    def _track(self, frame: RGBDFrame) -> PoseState:
        camera = (frame.intrinsics, frame.depth_scale)
        if camera != self._camera:
            self._camera, self.odometry, self.place = camera, None, None
        if self._anchor_new:
            self._anchor_new = False
            pid = new_place_id()
            self.places[pid] = Place(pid, dirty=True)
            self._start(frame, pid, np.eye(4))
            return PoseState(np.eye(4), pid, True)
        if self.odometry is None:
            return self._relocalise(frame, _gray(frame))
        result = self.odometry.track(frame.color, frame.depth, frame.seq)
        if result.segment != self.segment:  # odometry gave up its map: its poses are unrelated now
            self.odometry, self.place = None, None
            return self._relocalise(frame, _gray(frame))
        if result.ok:  # the usual frame: odometry alone, no grey image needed
            self.lost = 0
            self.last_ok_pose = result.pose
            if result.keyframe:
                self._add_keyframe(frame, _gray(frame), result.pose)
            return PoseState(result.pose, self.place, True, relocalised=result.relocalised)
        self.lost += 1
        self.counters["lost_frames"] += 1
        state = self._relocalise(frame, _gray(frame), only=self.place)
        if state.ok:
            return state
        return PoseState(result.pose, self.place, False, lost=self.lost, resembles=state.resembles)

    def _start(self, frame: RGBDFrame, place: str, pose: np.ndarray) -> None:
        self.odometry = Odometry(frame.intrinsics, frame.depth_scale, OdometryOptions(), initial_pose=pose)
        result = self.odometry.track(frame.color, frame.depth, frame.seq)
        self.segment = result.segment
        self.place = place
        self.lost = 0
        self.last_ok_pose = pose
        self._add_keyframe(frame, cv2.cvtColor(frame.color, cv2.COLOR_BGR2GRAY), pose)

    def _features(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        kp, desc = self._orb.detectAndCompute(gray, None)
        return np.array([k.pt for k in kp], np.float32).reshape(-1, 2), desc

    def _relocalise(self, frame: RGBDFrame, gray: np.ndarray, only: str | None = None) -> PoseState:
        cands = [(pid, kf) for pid, p in self.places.items() if only in (None, pid) for kf in p.keyframes]
        if not cands:
            return PoseState(None, None, False)
        pts, desc = self._features(gray)
        if desc is None or len(pts) < RELOC_MIN_INLIERS:
            return PoseState(None, None, False)
        start = self._rr % len(cands)
        tried = (cands[start:] + cands[:start])[:8]  # at most 8 keyframes per frame: bounded cost
        self._rr += 8
        k = frame.intrinsics.matrix()
        resembles = False
        for pid, kf in tried:
            pairs = self._bf.knnMatch(desc, kf.desc, k=2)
            good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
            if len(good) >= RESEMBLANCE_MATCHES:
                resembles = True
            if len(good) < RELOC_MIN_INLIERS:
                continue
            obj = kf.world[[m.trainIdx for m in good]].astype(np.float64)
            img = pts[[m.queryIdx for m in good]].astype(np.float64)
            ok, rvec, tvec, inl = cv2.solvePnPRansac(obj, img, k, None, iterationsCount=200, reprojectionError=4.0,
                                                     confidence=0.99)
            if not ok or inl is None or len(inl) < RELOC_MIN_INLIERS:
                continue
            w2c = np.eye(4)
            w2c[:3, :3] = cv2.Rodrigues(rvec)[0]
            w2c[:3, 3] = tvec.reshape(3)
            pose = np.linalg.inv(w2c)
            self.counters["relocalised"] += 1
            self._start(frame, pid, pose)
            return PoseState(pose, pid, True, relocalised=True)
        return PoseState(None, None, False, resembles=resembles)

    def _add_keyframe(self, frame: RGBDFrame, gray: np.ndarray, pose: np.ndarray, force: bool = False) -> None:
        place = self.places.get(self.place or "")
        if place is None:
            return
        if not force and len(place.keyframes) >= MAX_KEYFRAMES:
            return
        for kf in place.keyframes:  # keep keyframes spread out
            rel = np.linalg.inv(kf.pose) @ pose
            if np.linalg.norm(rel[:3, 3]) < 0.2 and rotation_angle_deg(rel[:3, :3]) < 12:
                return
        pts, desc = self._features(gray)
        if desc is None:
            return
        intr = frame.intrinsics
        ui = np.clip(np.rint(pts[:, 0]).astype(int), 0, intr.width - 1)
        vi = np.clip(np.rint(pts[:, 1]).astype(int), 0, intr.height - 1)
        z = frame.depth[vi, ui].astype(np.float64) / frame.depth_scale
        ok = (z > 0.1) & (z < 6.0)
        if np.count_nonzero(ok) < RELOC_MIN_INLIERS:
            return
        cam = np.stack([(pts[ok, 0] - intr.cx) / intr.fx * z[ok], (pts[ok, 1] - intr.cy) / intr.fy * z[ok], z[ok]], 1)
        world = (cam @ pose[:3, :3].T + pose[:3, 3]).astype(np.float32)
        place.keyframes.append(PlaceKeyframe(pose.copy(), desc[ok], world))
        place.dirty = True
        self.counters["keyframes_added"] += 1
        if time.monotonic() - self._last_save > 2.0:
            self.save()

    def save(self) -> None:
        if self.folder is None:
            return
        for place in self.places.values():
            if place.dirty:
                place.save(self.folder)
        self._last_save = time.monotonic()


def place_from_session(frames: Any, place_id: str | None = None) -> tuple[Place, int]:
    """A place built from a recorded session's frames (iterable of RGBDFrame, in order), in that
    session's coordinates: the recorded poses (`attachments["truth"]["pose"]`, e.g. an ingest
    session's groundtruth.txt) where present, else odometry from the first frame. (place, frames used)"""
    place = Place(place_id or new_place_id(), dirty=True)
    keeper = PoseKeeper({place.id: place}, None)
    keeper.place = place.id
    odo: Odometry | None = None
    n = 0
    for frame in frames:
        n += 1
        pose = (frame.attachments.get("truth") or {}).get("pose")
        if pose is None:
            if odo is None:
                odo = Odometry(frame.intrinsics, frame.depth_scale, OdometryOptions())
            result = odo.track(frame.color, frame.depth, frame.seq)
            if not result.ok or result.segment:
                continue
            pose = result.pose
        keeper._add_keyframe(frame, cv2.cvtColor(frame.color, cv2.COLOR_BGR2GRAY), np.asarray(pose, float))
    return place, n
