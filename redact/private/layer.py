"""The wearer's own privacy in the redaction stage: private objects, 3D volumes, zone policies.

    layer = PrivateLayer.load(state_dir, PrivacyConfig())      # what `crowdcap privacy ...` stored
    color, depth, regions = layer.apply(frame, color, depth)    # raw frame in; may raise FrameWithheld

`RedactStage` calls `apply` after its detectors, on the raw frame (in memory: the pose for volumes is
estimated here, see places.py) with the colour/depth it has redacted so far; arrays are copied on
first write. Regions go into the frame's manifest by name hash; `coverage()` says whether this frame was searched
for objects whole or only followed held matches (objects.py: the schedule and its guarantee). Fail closed: a pose lost near a volume
beyond `volume_hold_frames`, or an unlocalised frame that resembles a place with volumes, is withheld
(`private_pose_lost`); any error in here withholds the frame (`private_error`, via the stage).
The state folder is re-read when `privacy` commands change it (the `changed` stamp file).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from capture.frame import FrameWithheld, RGBDFrame
from redact.private.common import Canvas, PrivateError, check_name, polygon_mask, private_dir
from redact.private.config import PrivacyConfig
from redact.private.objects import ObjectMatcher, ObjectStore
from redact.private.places import PoseKeeper, load_places, places_dir
from redact.private.volumes import Volume, VolumeStore, check_box, volume_mask

log = logging.getLogger("crowdcap.private")


def touch_changed(state_dir: str | Path) -> None:
    """Tell running layers that the state changed (they re-read it within a second)."""
    stamp = private_dir(state_dir) / "changed"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(f"{threading.get_ident()}\n")


class PrivateLayer:
    def __init__(self, state_dir: str | Path | None, cfg: PrivacyConfig) -> None:
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.cfg = cfg
        self.objects = ObjectMatcher([], cfg.object_features)
        self.volumes: list[Volume] = []
        self.pose: PoseKeeper | None = None
        self._stamp = -1.0
        self._frames = 0
        self._lock = threading.Lock()
        self._pending_marks: list[tuple[str, np.ndarray, float, str, threading.Event, dict[str, Any]]] = []
        self.counts: Counter[str] = Counter()  # regions per name hash
        self.withheld: Counter[str] = Counter()
        self.last_pose_ok: bool | None = None
        self.zone_status: Any = None  # set by device.zones.attach_zones
        self.reload()

    @classmethod
    def load(cls, state_dir: str | Path | None, cfg: PrivacyConfig | None = None) -> PrivateLayer:
        return cls(state_dir, cfg or PrivacyConfig())

    # -- state ------------------------------------------------------------------------------------
    def _stamp_now(self) -> float:
        if self.state_dir is None:
            return 0.0
        try:
            return (private_dir(self.state_dir) / "changed").stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def reload(self) -> None:
        """Re-read objects, volumes and places (a bad state file raises PrivateError, naming it)."""
        cfg = self.cfg
        self._stamp = self._stamp_now()
        if self.state_dir is None or not cfg.enabled:
            return
        objects = ObjectStore(self.state_dir).load()
        self.objects = ObjectMatcher(objects, cfg.object_features, min_inliers=cfg.object_min_inliers,
                                     hold_frames=max(cfg.object_hold_frames, cfg.object_interval - 1),
                                     frame_scale=cfg.object_scale, interval=cfg.object_interval,
                                     track=cfg.object_track, track_margin_growth=cfg.object_track_margin_growth)
        self.volumes = VolumeStore(self.state_dir).load()
        if self.volumes and self.pose is None:
            self.pose = PoseKeeper(load_places(self.state_dir), places_dir(self.state_dir))
        elif self.pose is not None:
            for pid, place in load_places(self.state_dir).items():
                self.pose.places.setdefault(pid, place)

    @property
    def active(self) -> bool:
        return bool(self.objects.objects or self.volumes or self._pending_marks)

    # -- marking a volume "in front of me" --------------------------------------------------------
    def request_mark(self, name: str, box: Any, distance: float = 1.5, applies_to: str = "both") -> tuple[
            threading.Event, dict[str, Any]]:
        """Ask the next frame to anchor a volume `box` (W H D) centred `distance` m ahead of the camera.
        The caller waits on the event (bounded); the dict then has `volume` or `error`."""
        if self.state_dir is None:
            raise PrivateError("mark-volume: the device has no state folder")
        check_name(name, "volume")
        size = check_box(box)
        if not 0.1 <= distance <= 20:
            raise PrivateError(f"--at: expected 0.1-20 metres, got {distance}")
        done, result = threading.Event(), {}
        with self._lock:
            self._pending_marks.append((name, size, distance, applies_to, done, result))
        return done, result

    def _mark(self, frame: RGBDFrame) -> None:
        with self._lock:
            marks, self._pending_marks = self._pending_marks, []
        assert self.state_dir is not None
        if self.pose is None:
            self.pose = PoseKeeper(load_places(self.state_dir), places_dir(self.state_dir))
        state = self.pose.track(frame)
        if state.place is None:  # nowhere known: this frame starts a new place
            self.pose.anchor_new_place()
            state = self.pose.track(frame)
        pose = state.pose if state.ok else self.pose.last_ok_pose
        for name, size, distance, applies_to, done, result in marks:
            try:
                if pose is None or self.pose.place is None:
                    raise PrivateError("mark-volume: no pose for this frame (too little depth or texture); try "
                                       "again facing a textured scene")
                centre = pose[:3, :3] @ np.array([0.0, 0.0, distance]) + pose[:3, 3]
                vol = Volume(name, self.pose.place, centre, pose[:3, :3].copy(), size, applies_to)
                VolumeStore(self.state_dir).add(vol)
                self.pose.save()
                touch_changed(self.state_dir)
                self.volumes = VolumeStore(self.state_dir).load()
                result["volume"] = {"name": name, "name_hash": vol.name_hash, "place": vol.place,
                                    "centre": [round(float(v), 3) for v in centre]}
            except (PrivateError, OSError) as e:
                result["error"] = str(e)
            done.set()

    # -- the hot path -----------------------------------------------------------------------------
    def apply(self, frame: RGBDFrame, color: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                    list[dict[str, Any]]]:
        self._frames += 1
        if self.state_dir is not None and self._frames % 15 == 0 and self._stamp_now() != self._stamp:
            self.reload()
        zones = frame.attachments.get("zone_withhold")
        if zones:  # read inside a `withhold` zone (device/zones.py)
            self.withheld["zone_withheld"] += 1
            raise FrameWithheld("zone_withheld", f"inside private zone {zones[0]}")
        if self._pending_marks:
            self._mark(frame)
        if not self.active:
            return color, depth, []
        canvas = Canvas(color, depth, (frame.color, frame.depth))
        regions: list[dict[str, Any]] = []
        w, h = frame.size
        if self.objects.objects:
            gray = cv2.cvtColor(frame.color, cv2.COLOR_BGR2GRAY)
            for hit in self.objects.match(gray):
                placed = polygon_mask(hit.quad, w, h)
                if placed is None:
                    continue
                mask, x0, y0 = placed
                canvas.redact_mask(mask, x0, y0, self.cfg.object_action, hit.applies_to)
                self.counts[hit.name_hash] += 1
                regions.append(_region("private_object", hit.name_hash, mask, x0, y0, self.cfg.object_action,
                                       hit.applies_to, "matched" if hit.held == 0 else "propagated",
                                       quad=[[round(float(a), 1), round(float(b), 1)] for a, b in hit.quad]))
        if self.volumes:
            regions += self._volumes(frame, canvas)
        return canvas.color, canvas.depth, regions

    def _volumes(self, frame: RGBDFrame, canvas: Canvas) -> list[dict[str, Any]]:
        assert self.pose is not None
        cfg = self.cfg
        state = self.pose.track(frame)
        self.last_pose_ok = state.ok
        if state.pose is None or state.place is None:
            if cfg.unlocalised == "withhold" or state.resembles:
                self.withheld["private_pose_lost"] += 1
                raise FrameWithheld("private_pose_lost", "in a place with privacy volumes but not relocalised yet")
            return []
        mine = [v for v in self.volumes if v.place == state.place]
        margin = cfg.volume_margin
        if not state.ok:
            near = any(np.linalg.norm(v.centre - state.pose[:3, 3]) <= cfg.volume_near_m + float(v.size.max())
                       for v in mine)
            if near and state.lost > cfg.volume_hold_frames:
                self.withheld["private_pose_lost"] += 1
                raise FrameWithheld("private_pose_lost", f"pose lost for {state.lost} frames near a privacy volume")
            margin += cfg.volume_margin_growth * state.lost
        regions = []
        for vol in mine:
            placed = volume_mask(vol, state.pose, frame.intrinsics, frame.depth, frame.depth_scale, margin)
            if placed is None:
                continue
            mask, x0, y0 = placed
            if not mask.any():
                continue
            canvas.redact_mask(mask, x0, y0, cfg.volume_action, vol.applies_to)
            self.counts[vol.name_hash] += 1
            regions.append(_region("private_volume", vol.name_hash, mask, x0, y0, cfg.volume_action, vol.applies_to,
                                   "pose" if state.ok else "predicted"))
        return regions

    def reset(self) -> None:
        """Unrelated frames follow (offline stills, a new folder): forget holds and the pose."""
        self.objects.reset()
        if self.pose is not None:
            self.pose.odometry, self.pose.place, self.pose._last = None, None, None

    # -- status -----------------------------------------------------------------------------------
    def coverage(self) -> dict[str, Any]:
        """The last frame's coverage of the wearer's objects for the manifest's `classes` (empty when
        none are registered): `detected` (searched whole) or `held` (followed since a search `age` ago)."""
        return {"private_object": self.objects.coverage()} if self.objects.objects else {}

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"objects": len(self.objects.objects), "volumes": len(self.volumes),
                               "matches": dict(self.counts), "withheld": dict(self.withheld)}
        if self.objects.objects:
            out["object_search"] = {"interval": self.objects.interval, **self.objects.stats}
        if self.zone_status is not None:
            out["zones"] = self.zone_status()
        if self.pose is not None:
            out["pose"] = {"place": self.pose.place, "ok": self.last_pose_ok, "lost": self.pose.lost,
                           **self.pose.counters}
        return out

    def close(self) -> None:
        if self.pose is not None:
            try:
                self.pose.save()
            except OSError as e:
                log.warning("privacy: place keyframes not saved: %s", e)


def _region(cls: str, nhash: str, mask: np.ndarray, x0: int, y0: int, action: str, applies_to: str, source: str,
            **extra: Any) -> dict[str, Any]:
    ys, xs = np.nonzero(mask)
    bbox = [int(x0 + xs.min()), int(y0 + ys.min()), int(x0 + xs.max()) + 1, int(y0 + ys.max()) + 1]
    return {"bbox": bbox, "class": cls, "name_hash": nhash, "score": 1.0, "action": action,
            "applies_to": applies_to, "source": source, "pixels": int(len(xs)), **extra}
