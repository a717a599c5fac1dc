"""The redaction stage: detect, hold, redact colour and depth per the wearer's policy, fail closed.

A frame leaves `apply` only (a) with every region of the policy's classes redacted after a
detector pass over this very frame, or (b) fully obscured when the policy says `on_fault =
"obscure"` and something went wrong. Otherwise it raises `FrameWithheld`. A stream goes through
`push`/`flush` instead: with `face_every` > 1 only key frames get the face detection, the frames
between wait for the next one and are covered from both sides (contract in redact/bracket.py). With
`split_threads` the pipeline runs the face part and the rest (`finish`) in two threads (redact/split.py).
The face passes themselves (whole frame with its re-check mosaic, the verifier schedule, the between
pass) are in redact/face_passes.py.

"A detector pass over this very frame" is the whole-frame pass, which may be downscaled
(`detect_width/height`). What only full resolution sees (faces too small for that pass) is seen by a
full-resolution tile every few frames or by the re-check of a weak candidate, and is covered on the
frames between only by its track, held `hold_frames` with a margin growing `margin_growth` per
frame. Each manifest's `passes` says what ran on the frame ({card: {"whole": [w, h], "tiles": n}},
plus `<verifier>_whole` when the verify model's scheduled whole-frame pass ran).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np

from capture.frame import FrameWithheld, RGBDFrame
from redact import segment
from redact.ahead import Ahead, AheadRunner
from redact.bracket import Bracket
from redact.config import RedactConfig
from redact.detector import Deadline, Detector
from redact.face_passes import FacePasses
from redact.layers import PolicyLayers
from redact.policy import Policy
from redact.proof import Canary
from redact.schedule import FormSchedule
from redact.split import Covered, RedactFinish, released
from redact.tracker import Tracker
from redact.withheld import as_withheld

log = logging.getLogger("crowdcap.redact")


class RedactStage(FacePasses):
    name = "redact"

    def __init__(self, cfg: RedactConfig, policy: Policy, detectors: list[Detector], load_error: str = "",
                 verifier: Detector | None = None) -> None:
        self.cfg = cfg
        self.detectors = detectors
        self.verifier = verifier  # re-checks small candidates at full resolution (None: each detector itself)
        self.load_error = load_error
        self._classes: list[str] = sorted({c for d in detectors for c in d.card.classes})
        self._class_ids = {c: i for i, c in enumerate(self._classes)}
        self._policy = policy
        # Text, plates, persons, screens and rule-defined forms: their own detectors and schedule.
        self.forms = FormSchedule(cfg, policy, self._classes)
        self._policy_error = self._uncovered(policy)
        self.layers = PolicyLayers.from_config(cfg)  # floor ∪ fleet ∪ wearer (redact/layers.py)
        self.canary = Canary(cfg.canary_every)  # detectors keep proving they see (redact/proof.py)
        # Under the face bracket a track can be confirmed on key frames only: held face_every - 1 frames
        # longer, it survives as many missed detections as with face_every = 1 (crowd recall, bench redact).
        self.tracker = Tracker(cfg.hold_frames + cfg.face_every - 1, cfg.margin_growth)
        self._lock = threading.Lock()
        self._faults: Counter[str] = Counter()
        self._withheld: Counter[str] = Counter()
        self._frames = 0
        self._regions = 0
        self._obscured = 0
        self._times: deque[float] = deque(maxlen=1000)
        self._last_fault = ""
        self._verifier_clock = 0
        self._last_passes: dict[str, Any] = {}
        self._tile_credit = 0.0  # accumulates tiles_per_frame; a tile runs per whole credit
        self.private: Any = None  # the wearer's own objects/volumes (redact/private/layer.py), set by build_stage
        self.bracket = Bracket(self, cfg.face_every)  # push/flush: key frames and the frames between
        self.face_thread = ""  # set when the pipeline runs the face part alone (push_part: split threads)
        self.ahead = AheadRunner()  # work that needs no faces (redact/ahead.py); workers with split threads

    # -- policy -----------------------------------------------------------------------------------
    @property
    def last_passes(self) -> dict[str, Any]:
        return self._last_passes

    @property
    def policy(self) -> Policy:
        return self._policy

    def _uncovered(self, policy: Policy) -> str:
        missing = [r.cls for r in policy.rules if r.cls not in self._class_ids and not self.forms.provides(r.cls)]
        if missing and not self.load_error:
            why = f" ({self.forms.error})" if self.forms.error else ""
            return f"policy {policy.version} asks for {', '.join(missing)} but no loaded model detects it{why}"
        return ""

    def reload_policy(self, path: str | Path | None) -> Policy:
        """Swap in a new wearer policy (None/empty = none: the other layers); a bad file, or one below
        the privacy floor, raises and changes nothing."""
        return self._swap(self.layers.with_wearer(path))

    def reload_fleet(self, path: str | Path | None) -> Policy:
        """Swap in a new fleet policy layer (the downlink's `policy update`); same rules as above."""
        return self._swap(self.layers.with_fleet(path))

    def _swap(self, policy: Policy) -> Policy:
        forms = FormSchedule(self.cfg, policy, self._classes, self.forms.models)
        with self._lock:
            self._policy = policy
            self.forms = forms
            self._policy_error = self._uncovered(policy)
        log.info("redaction policy %s loaded from %s", policy.version, policy.origin)
        return policy

    # -- the hot path -----------------------------------------------------------------------------
    def apply(self, frame: RGBDFrame) -> RGBDFrame:
        """One frame in, that frame out after a full detection over it (stills, tests, face_every = 1)."""
        policy = self._policy
        t0 = time.perf_counter()
        try:
            regions, detector_ms = self.detect_key(frame, policy, t0)
        except FrameWithheld as e:
            return self._fault(frame, policy, e)
        return self.finish(frame, policy, regions, detector_ms, t0, {"passes": self._last_passes})

    def push(self, frame: RGBDFrame) -> list[RGBDFrame | FrameWithheld]:
        """A stream's next frame in; the frames released by it, in order (redact/bracket.py)."""
        return released(self, self._push(frame))

    def flush(self) -> list[RGBDFrame | FrameWithheld]:
        """End of stream (or a stalled one): every waiting frame released, the last as a key frame."""
        return released(self, self._flush())

    def push_part(self, frame: RGBDFrame) -> list[Any]:
        """`push`'s face part only: `Covered` items for "redact-finish" (the pipeline calls it when that
        stage follows this one: redact/split.py)."""
        self.face_thread = threading.current_thread().name
        return self._push(frame)

    def flush_part(self) -> list[Any]:
        self.face_thread = threading.current_thread().name
        return self._flush()

    def _push(self, frame: RGBDFrame) -> list[Any]:
        shift = self.bracket.shift(frame)
        # What needs no faces starts now: in the workers it runs while the frame waits (redact/ahead.py)
        self.ahead.start(frame, shift, self.forms, self.private, time.perf_counter, self.bracket.keys(frame))
        try:
            items = self.bracket.push(frame, shift)
        except BaseException:
            self.ahead.unstart()
            raise
        return self.ahead.hand(items, Covered, self._mismatch)

    def _flush(self) -> list[Any]:
        return self.ahead.hand(self.bracket.flush(), Covered, self._mismatch)

    def _mismatch(self, item: Covered) -> Any:
        fault = FrameWithheld("bracket_error", f"frame {item.frame.seq} released out of push order")
        with self._lock:
            self.bracket.withheld[fault.reason] += 1
        return self.bracket._withhold(item.frame, item.policy, fault)

    def pipeline_stages(self) -> list[Any]:
        """The pipeline stages doing this stage's work: [self], or with `split_threads` [self (faces,
        "redact"), RedactFinish (the rest, "redact-finish")] — two pipeline threads (redact/split.py),
        plus the workers of the work that needs no faces: the forms' passes ("redact-forms",
        `forms_thread`) and the wearer's private layer ("redact-private", `private_thread`)."""
        if not self.cfg.split_threads:
            return [self]
        if not self.ahead.threads:
            self.ahead.close()
            self.ahead = AheadRunner(self.cfg.forms_thread, self.cfg.private_thread)
        return [self, RedactFinish(self)]

    def detect_key(self, frame: RGBDFrame, policy: Policy, t0: float, frames: int = 1) -> tuple[list[dict[str, Any]], float]:
        """The full face detection of a (key) frame and the canary: (face regions, ms); any fault is
        raised as FrameWithheld. `frames`: frames since the last key frame (tiles and the verify
        model's schedule keep their per-frame rate)."""
        try:
            if self.load_error:
                raise FrameWithheld("no_model", self.load_error)
            if self._policy_error:
                raise FrameWithheld("no_model", self._policy_error)
            regions, detector_ms = self._detect(frame, policy, t0, frames)
            self.canary.check(self.detectors, t0, self.cfg.budget_ms)
            return regions, detector_ms
        except FrameWithheld:
            raise
        except Exception as e:
            raise as_withheld(e) from e

    def finish(self, frame: RGBDFrame, policy: Policy, regions: list[dict[str, Any]], detector_ms: float, t0: float,
               extra: dict[str, Any], age_tracks: bool = True, timed: bool = True, ahead: Ahead | None = None) -> RGBDFrame:
        """The per-frame rest once the face regions are known: forms (text, plates, persons), the
        policy's drop, painting, the wearer's private layer, the manifest (+ `extra`). `ahead`: the
        frame's work that needed no faces (redact/ahead.py: the forms' passes, the private layer —
        then its (color, depth, regions, coverage), the rest painted over its colour/depth)."""
        try:
            private = ahead.private() if ahead is not None else None
        except FrameWithheld as e:  # the layer's own reason (lost pose near a volume, a timeout)
            with self._lock:
                self._withheld[e.reason] += 1
            raise
        except Exception as e:  # cannot vouch for the wearer's own private things: fail closed
            return self._fault(frame, policy, FrameWithheld("private_error", f"{type(e).__name__}: {e}"), age_tracks)
        try:
            # After the canary: a forms pass restoring lapsed coverage may take longer than the budget.
            forms = ahead.schedule if ahead is not None else self.forms  # the schedule its passes ran in
            looked = None
            if ahead is not None and forms.classes:
                *before, (_, looked) = ahead.looks(t0)
                for color, prior in before:  # frames withheld just before it: their holds are kept
                    forms.absorb(color, prior)
            regions, detector_ms, per_class = forms.step(frame, policy, regions, t0, detector_ms, looked)
        except Exception as e:
            return self._fault(frame, policy, as_withheld(e), age_tracks)
        drop = [r for r in regions if r["action"] == "drop_frame"]
        if drop:
            with self._lock:
                self._withheld["policy_drop"] += 1
            raise FrameWithheld("policy_drop", f"policy {policy.version}: {drop[0]['class']} in view")
        # Copy on write: the source may reuse its buffers (camera ring buffers, replay caches).
        color, depth = (private[0], private[1]) if private is not None else (frame.color, frame.depth)
        if color is frame.color and any(r["applies_to"] != "depth" for r in regions):
            color = color.copy()
        if depth is frame.depth and any(r["applies_to"] != "color" for r in regions):
            depth = depth.copy()
        masks = segment.refine(frame.color, regions, policy)  # {} unless the person rule says shape = "mask"
        for i, r in enumerate(regions):
            segment.paint(color, depth, r, masks.get(i))
        if private is not None:  # run before, in its own thread: its regions were painted first
            regions = regions + private[2]
        elif self.private is not None:  # on the raw frame (pose for volumes), after the detectors
            try:
                color, depth, mine = self.private.apply(frame, color, depth)
            except FrameWithheld as e:
                with self._lock:
                    self._withheld[e.reason] += 1
                raise
            except Exception as e:  # cannot vouch for the wearer's own private things: fail closed
                return self._fault(frame, policy, FrameWithheld("private_error", f"{type(e).__name__}: {e}"),
                                   age_tracks)
            regions = regions + mine
        manifest = self._manifest(policy, detector_ms, "detected", regions) | per_class | extra
        coverage = private[3] if private is not None else (
            self.private.coverage() if self.private is not None and hasattr(self.private, "coverage") else {})
        if coverage:
            manifest["classes"] = {**manifest.get("classes", {}), **coverage}  # searched or followed
        with self._lock:
            self._frames += 1
            self._regions += len(regions)
            if timed:
                self._times.append(detector_ms)
        return frame.replace(color=color, depth=depth, redaction=manifest)

    def _detect(self, frame: RGBDFrame, policy: Policy, t0: float, frames: int = 1) -> tuple[list[dict[str, Any]], float]:
        width, height = frame.size
        budget_s = self.cfg.budget_ms / 1000.0
        found = []
        ran_passes: dict[str, Any] = {}  # what this frame's schedule ran (manifest `passes`)
        with Deadline(budget_s) as deadline:
            for det in self.detectors:
                whole, tiles = det.plan(width, height, (self.cfg.detect_width, self.cfg.detect_height),
                                        (self.cfg.tile_width, self.cfg.tile_height))
                thr = self._threshold(det, policy)
                found.append(self._whole_pass(det, frame.color, whole, deadline.options, thr))
                self._tile_credit = min(self._tile_credit + self.cfg.tiles_per_frame * frames,
                                        float(max(1, len(tiles))))
                ran = 0
                while ran < len(tiles) and self._tile_credit >= 1.0:
                    found.append(self._classed(det, det.run(frame.color, tiles[ran], deadline.options, thr)))
                    ran += 1
                    self._tile_credit -= 1.0
                det.advance(ran)
                ran_passes[det.card.name] = {"whole": [round(width * whole.scale), round(height * whole.scale)]
                                             if whole.scale else list(det.card.input.size or ()), "tiles": ran}
            scheduled = self._scheduled_verifier_pass(frame.color, policy, deadline.options, frames)
            found.extend(scheduled)
            if scheduled and self.verifier is not None:
                ran_passes[f"{self.verifier.card.name}_whole"] = True
        self._last_passes = ran_passes
        detector_ms = (time.perf_counter() - t0) * 1000.0
        if deadline.expired or detector_ms > self.cfg.budget_ms:
            raise FrameWithheld("model_timeout", f"detection took {detector_ms:.0f} ms, budget {self.cfg.budget_ms:.0f} ms")
        dets = self._kept(np.concatenate(found), policy)
        self.tracker.update(dets[:, :4].astype(np.float64), dets[:, 4].astype(np.float64),
                            dets[:, 5].astype(np.int64))
        return self.track_regions(policy, width, height), detector_ms

    def rule_of_class(self, policy: Policy, class_id: int) -> Any:
        return policy.rule_for(self._classes[int(class_id)])

    def track_regions(self, policy: Policy, width: int, height: int) -> list[dict[str, Any]]:
        """The tracker's tracks as regions: grown by their rule's margin (and while held, by age and speed)."""
        tr = self.tracker
        rules_by_track = [self.rule_of_class(policy, c) for c in tr.cls]
        margins = np.array([r.margin if r else 0.0 for r in rules_by_track])
        boxes = tr.regions(margins, width, height)
        regions = []
        for i, rule in enumerate(rules_by_track):
            x1, y1, x2, y2 = boxes[i]
            if rule is None or x2 <= x1 or y2 <= y1:  # not private, or moved out of view
                continue
            regions.append({"bbox": [int(v) for v in boxes[i]], "class": rule.cls, "score": round(float(tr.score[i]), 4),
                            "action": rule.action, "applies_to": rule.applies_to,
                            "source": "detected" if tr.age[i] == 0 else "propagated"})
        return regions

    def _fault(self, frame: RGBDFrame, policy: Policy, e: FrameWithheld, age_tracks: bool = True) -> RGBDFrame:
        """Withhold (raise, counted) or obscure a frame that cannot be vouched for. `age_tracks` False:
        the tracker already stepped over this frame (a bracketed frame)."""
        with self._lock:
            self._faults[e.reason] += 1
            self._last_fault = f"{e.reason}: {e.detail}"[:300]
        # No detections for this frame: age the tracks (they drift on and grow, and go after
        # hold_frames) rather than forget them — the next frame's detector may miss a face too.
        if age_tracks:
            self.tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
        if policy.on_fault != "obscure":
            with self._lock:
                self._withheld[e.reason] += 1
            raise e
        with self._lock:
            self._obscured += 1
        manifest = self._manifest(policy, 0.0, "obscured", [])
        manifest["fault"] = e.reason
        return frame.replace(color=np.zeros_like(frame.color), depth=np.zeros_like(frame.depth), redaction=manifest)

    def _model_ids(self) -> list[dict[str, str]]:
        extra = [self.verifier] if self.verifier and self.verifier not in self.detectors else []
        return [d.card.model_id for d in self.detectors + extra]

    def _manifest(self, policy: Policy, detector_ms: float, coverage: str,
                  regions: list[dict[str, Any]]) -> dict[str, Any]:
        return {"policy_version": policy.version,
                "models": self._model_ids() + self.forms.models.ids(),
                "detector_ms": round(detector_ms, 2), "coverage": coverage, "regions": regions,
                "floor": policy.floor, "policy_layers": dict(policy.layers)}

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            times = np.array(self._times) if self._times else None
            return {
                "policy_version": self._policy.version,
                "policy_origin": self._policy.origin,
                "floor": self._policy.floor,
                "policy_layers": dict(self._policy.layers),
                "canary": self.canary.status(),
                "models": self._model_ids() + self.forms.models.ids(),
                "load_error": self.load_error or self._policy_error,
                "frames_redacted": self._frames,
                "frames_obscured": self._obscured,
                "frames_withheld": dict(self._withheld),
                "faults": dict(self._faults),
                "last_fault": self._last_fault,
                "regions": self._regions,
                "tracks": len(self.tracker),
                "last_passes": self._last_passes,
                "bracket": self.bracket.status(),
                "split_threads": bool(self.face_thread),
                **({"private": self.private.status()} if self.private is not None else {}),
                "detector_ms_p50": round(float(np.percentile(times, 50)), 2) if times is not None else None,
                "detector_ms_p99": round(float(np.percentile(times, 99)), 2) if times is not None else None,
            } | self.forms.status() | ({"person_masks": segment.counts()} if segment.wants_mask(self._policy) else {})

    def close(self) -> None:  # frames still waiting in the bracket are not released: flush() first
        self.ahead.close()
        if self.private is not None:
            self.private.close()
        self.detectors = []
        self.load_error = self.load_error or "stage closed"
