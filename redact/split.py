"""Redaction over two pipeline threads: the face part, then the finish part, in frame order.

`RedactStage.pipeline_stages()` (with `redact.split_threads = true`) returns `[stage, RedactFinish(stage)]`:
  * "redact" (the RedactStage itself, so every `stages["redact"]` lookup — status, policy reloads,
    the private layer, model updates — keeps working): the pipeline drives it by `push_part`/`flush_part`
    when "redact-finish" follows it (device/pipeline.py; its `push`/`flush`/`apply` still do both parts,
    so the same stage used alone elsewhere is unchanged): they run the face detection and the
    bracket (redact/bracket.py) and release, in frame order, a `Covered` per frame (the raw frame, its
    face regions, detector_ms, manifest extras, its work ahead) or the `FrameWithheld` that stood for it
    (counted once, by the pipeline under "redact", and by the stage's own fault counters);
  * "redact-finish" (`RedactFinish.apply(covered)`): the per-frame rest (`RedactStage.finish`: forms
    — text, plates, persons —, the policy's drop, painting, the wearer's private layer, the manifest).
What needs no faces — the forms' detector passes and the wearer's private layer — starts as the frame
arrives, in two worker threads ("redact-forms", "redact-private": redact/ahead.py), and runs while the
frame waits for its bracket; the finish part joins it. (Before, the private layer had a pipeline
thread of its own after the face part, and the forms ran inside the finish part: a frame's latency
was the sum of the three; bench e2e, the note of issue 13.)
The pipeline joins the two parts by its bounded blocking queue, so they run concurrently; frame
order holds (one thread each side, FIFO between). `apply` (stills, `crowdcap redact`, tests)
still does both parts in one call, unchanged.

Measured (`python -m bench e2e --sources demo --paths new_default --seconds 15 --no-mesh --set
redact.split_threads=false|true`, 2026-12-03, 3 alternating pairs, load 2-3.6 on 2 cores shared with
other work): dropped before redaction 35-39 % → 9-17 %; frames spooled 275-291 → 375-410; device cores
used 1.04 → 1.43. The finish part's input queue holds one bracket's release (`face_every`): a queue of
8 raised capture → spool p50 to ~710 ms.

The raw frame inside a `Covered` travels only in memory, inside the device process, from one thread
to the next; nothing writes it anywhere. Fail closed as in one thread: any exception in the finish
part (or in its work ahead, raised again there) withholds the frame (or obscures it under `on_fault =
"obscure"`), counted with its reason (`private_error` for the private layer, `finish_error` for an
unexpected one) by the stage and by the pipeline under "redact-finish"; a frame the face part already
obscured passes on as it is; anything else that is not a `Covered` is a counted pipeline error and
goes nowhere.

Threads and shared state: the tracker, canary, bracket, tile credit and verifier clock belong to the
face thread only. The finish thread never steps the tracker: its fault path calls `_fault(...,
age_tracks=False)` — the tracker has already stepped over this very frame in the face thread (the key
frame's detection updated it; a bracketed frame was stepped by the forward hold), so stepping it again
would age every track twice for one frame (and race the face thread). The forms schedule's passes
belong to the "redact-forms" worker, its holds and reads to the finish thread (redact/passes.py); the
private layer to the "redact-private" worker; counters are under locks. The policy a frame was
detected with travels in its `Covered`, and the forms schedule its passes ran in travels in its
`Ahead`, so both parts use the same ones across a reload.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from capture.frame import FrameWithheld, RGBDFrame

if TYPE_CHECKING:
    from redact.ahead import Ahead
    from redact.policy import Policy
    from redact.stage import RedactStage


@dataclass
class Covered:
    """A frame whose face regions are known; the finish part still to run (in memory only)."""

    frame: RGBDFrame
    policy: Policy
    regions: list[dict[str, Any]]
    detector_ms: float
    spent_ms: float  # of the frame's budget, spent on its face detection (the forms get the rest)
    extra: dict[str, Any]  # manifest extras (passes, coverage, bracket)
    age_tracks: bool = True  # one thread only: a finish fault may age the tracks (as `apply` does)
    timed: bool = True  # detector_ms goes into the stage's detector percentiles
    bracket_age: int | None = None  # a bracketed frame: frames since its key frame before
    ahead: Ahead | None = None  # its work that needs no faces (redact/ahead.py), handed over by the stage

    @property
    def seq(self) -> int:  # the pipeline's error log names it
        return self.frame.seq


def complete(stage: RedactStage, c: Covered, age_tracks: bool | None = None) -> RGBDFrame:
    """The finish part of `c`: the redacted frame, or FrameWithheld (counted by the stage)."""
    t0 = time.perf_counter() - c.spent_ms / 1000.0  # the budget left at this point, not at detection
    out = stage.finish(c.frame, c.policy, c.regions, c.detector_ms, t0, c.extra,
                       age_tracks=c.age_tracks if age_tracks is None else age_tracks, timed=c.timed,
                       ahead=c.ahead)
    classes = out.redaction.get("classes")
    if c.bracket_age is not None and isinstance(classes, dict):
        # the face classes: covered by the bracket, not detected on this frame
        for cls in {r.cls for r in c.policy.rules} - set(stage.forms.classes):
            if cls in classes:
                classes[cls] = {"coverage": "bracketed", "age": c.bracket_age}
    return out


def released(stage: RedactStage, items: list[Any]) -> list[RGBDFrame | FrameWithheld]:
    """`push`/`flush` (one thread): the finish part of each released `Covered`, at once, in order."""
    out: list[RGBDFrame | FrameWithheld] = []
    for c in items:
        if not isinstance(c, Covered):
            out.append(c)
            continue
        try:
            out.append(complete(stage, c))
        except FrameWithheld as e:
            out.append(e)
        except Exception as e:  # a bug in painting or the manifest: this frame withheld, counted
            fault = FrameWithheld("bracket_error", f"{type(e).__name__}: {e}")
            with stage._lock:
                stage.bracket.withheld[fault.reason] += 1
            out.append(stage.bracket._withhold(c.frame, c.policy, fault))
    return out


class RedactFinish:
    """The "redact-finish" pipeline stage: `apply(Covered) -> RGBDFrame` (or FrameWithheld). Its input
    queue holds one bracket's release (face_every frames at once, no more — frames queued here are
    accepted and only wait; bench e2e: a queue of 8 raised capture→spool p50 from ~310 to ~720 ms; when
    it is full the face thread waits and the capture queue drops the oldest)."""

    name = "redact-finish"
    part_of = "redact"  # the pipeline's snapshot shows "redact" as the whole (device/pipeline.py)

    def __init__(self, stage: RedactStage) -> None:
        self.stage = stage
        self.queue_size = max(2, stage.cfg.face_every)
        self._lock = threading.Lock()
        self._frames = 0
        self._withheld: Counter[str] = Counter()
        self.thread = ""  # the thread the part ran in

    def _done(self) -> None:
        with self._lock:
            self._frames += 1

    def _count(self, reason: str) -> None:
        with self._lock:
            self._withheld[reason] += 1

    def _obscure_or_withhold(self, item: Covered, reason: str, e: Exception) -> RGBDFrame:
        """A fault this part cannot vouch past: the stage's `on_fault` obscures the frame or withholds it."""
        try:
            return self.stage._fault(item.frame, item.policy, FrameWithheld(reason, f"{type(e).__name__}: {e}"),
                                     age_tracks=False)
        except FrameWithheld as w:
            self._count(w.reason)
            raise

    def close(self) -> None:  # the stage ("redact") closes itself, its workers and its private layer
        pass

    def apply(self, item: Any) -> RGBDFrame:
        if isinstance(item, RGBDFrame) and item.redaction is not None:  # obscured by the face part (on_fault)
            return item
        if not isinstance(item, Covered):  # a wiring bug: nothing unredacted may pass on
            raise TypeError(f"redact-finish takes what the redact stage releases, not {type(item).__name__}")
        self.thread = threading.current_thread().name
        try:
            out = complete(self.stage, item, age_tracks=False)
        except FrameWithheld as e:
            self._count(e.reason)
            raise
        except Exception as e:  # a bug in painting or the manifest: the frame cannot be vouched for
            out = self._obscure_or_withhold(item, "finish_error", e)
        self._done()
        return out

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"frames_finished": self._frames, "frames_withheld": dict(self._withheld),
                    "thread": self.thread, "face_thread": self.stage.face_thread}
