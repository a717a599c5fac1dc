"""Work on a frame that need not wait for its faces: started as the frame arrives, joined when it is finished.

With split threads (redact/split.py) a frame waits in the face bracket for up to `face_every - 1`
later frames plus the key frame's detection (redact/bracket.py). Two parts of its redaction need
nothing from the faces, so they run *during* that wait, each in a worker thread of its own:
  * "redact-forms": the forms schedule's detector passes (redact/passes.py: text, persons, screens,
    the edge strips, their canaries) — the costly half of the forms;
  * "redact-private": the wearer's private layer (objects, places, volumes) on the raw frame, its
    regions painted on copies, with the layer's coverage.
The finish part ("redact-finish") then joins them: the rest of the forms (holds, reads, coverage) and
the painting. A frame's latency is then the longest of the three, not their sum; measured in
`python -m bench e2e` (the note of issue 13 has the numbers).

`AheadRunner.start(frame, shift)` (the face thread, in arrival order) returns an `Ahead`; the stage
hands it to the frame's `Covered` when the bracket releases it. Each worker runs its work in arrival
order, one frame at a time, so the schedule's and the layer's state see frames in order exactly as
in one thread. Without workers (`split_threads` off: `push`, `apply`) an `Ahead` runs the same work
inline, when the frame is finished — the same results.

Bounded: a result not there within `WAIT_S` withholds its frame (`model_timeout`), counted — a worker
that hangs cannot hang the stream (the workers' model runs have their own deadlines; this is the net
under them). A fault inside the work is raised again by `result()` in the finish thread, where the
stage's usual fail-closed handling withholds or obscures the frame. Frames the bracket withholds
never reach the finish: their private work is dropped, their forms' passes are absorbed before the
next frame's (`Ahead.before`: their holds are not lost; beyond MAX_WITHHELD the schedule closes the
gap, redact/passes.py). Everything here lives in memory, inside the device process; nothing is written.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from capture.frame import FrameWithheld, RGBDFrame

if TYPE_CHECKING:
    from redact.passes import Looked
    from redact.schedule import FormSchedule

WAIT_S = 10.0  # the longest the finish part waits for a frame's work ahead (backlog included)
# Withheld frames whose passes wait to be absorbed, at most (their raw frames are kept until then); an
# older one is forgotten: its pass is never absorbed, so its class's coverage lapses (fail closed).
MAX_WITHHELD = 8


class Worker:
    """One named daemon thread running submitted calls in submission order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._queue.put((fut, fn))
        return fut

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, fn = item
            if not fut.set_running_or_notify_cancel():  # dropped before it ran
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the frame's finish, which fails closed
                fut.set_exception(e)

    def close(self) -> None:
        """The thread ends after what was submitted (daemon: never blocks the process's exit)."""
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread = None


@dataclass
class Ahead:
    """One frame's work ahead: the forms' passes (a `Looked`) and the private layer's
    (color, depth, regions, coverage); each a Future (workers) or None (run inline by `forms()` /
    `private()`)."""

    frame: RGBDFrame
    shift: tuple[float, float] | None  # the camera's shift since the previous frame (the bracket's)
    key: bool  # a face key frame: its passes are put off a frame when they can (redact/passes.py)
    schedule: FormSchedule  # whose passes ran (or run) on it: a policy swap keeps each frame's
    forms_future: Future[Any] | None = None
    private_future: Future[Any] | None = None
    # frames withheld before their finish, just before this one (same schedule): their passes are
    # absorbed first (FormSchedule.absorb), so their holds are not lost
    before: list[Ahead] = field(default_factory=list)

    def forms(self, t0: float) -> Looked | None:
        """The frame's `Looked` (None: no forms class in the policy)."""
        if self.forms_future is not None:
            return _result(self.forms_future, "the forms' detector passes")
        return self.schedule.look(self.frame.color, self.shift, t0, self.key)

    def private(self) -> tuple[Any, Any, list[dict[str, Any]], dict[str, Any]] | None:
        """The private layer's (color, depth, regions, coverage); None: no layer, or not run ahead."""
        if self.private_future is None:
            return None
        return _result(self.private_future, "the wearer's private layer")

    def looks(self, t0: float) -> list[tuple[Any, Looked | None]]:
        """(color, Looked) of the frames withheld just before this one, then this frame's, in order."""
        out = [(a.frame.color, a.forms(t0)) for a in self.before]
        return [*out, (self.frame.color, self.forms(t0))]

    def drop(self) -> None:
        """The frame was withheld before its finish: its work is not needed (what already ran stays)."""
        for fut in (self.forms_future, self.private_future):
            if fut is not None:
                fut.cancel()


def _result(fut: Future[Any], what: str) -> Any:
    try:
        return fut.result(timeout=WAIT_S)
    except FutureTimeout:
        raise FrameWithheld("model_timeout", f"{what} not done after {WAIT_S:.0f} s") from None


def run_private(layer: Any, frame: RGBDFrame) -> tuple[Any, Any, list[dict[str, Any]], dict[str, Any]]:
    color, depth, mine = layer.apply(frame, frame.color, frame.depth)
    coverage = layer.coverage() if hasattr(layer, "coverage") else {}
    return color, depth, mine, coverage


class AheadRunner:
    """The stage's work ahead: `start` a frame's (face thread, arrival order), `hand` each released
    `Covered` its own. With `forms_thread` / `private_thread` (split threads) in the workers
    "redact-forms" / "redact-private"; without, inline when the frame is finished."""

    def __init__(self, forms_thread: bool = False, private_thread: bool = False) -> None:
        self.forms = Worker("redact-forms") if forms_thread else None
        self.private = Worker("redact-private") if private_thread else None
        self._pending: deque[Ahead] = deque()  # frames inside the bracket, oldest first
        self._withheld: list[Ahead] = []  # released withheld since the last `Covered`: see `Ahead.before`

    @property
    def threads(self) -> bool:
        return self.forms is not None or self.private is not None

    def start(self, frame: RGBDFrame, shift: tuple[float, float] | None, schedule: FormSchedule, layer: Any,
              clock: Callable[[], float], key: bool = False) -> None:
        ahead = Ahead(frame, shift, key, schedule)
        if self.forms is not None and schedule.classes:
            ahead.forms_future = self.forms.submit(lambda: schedule.look(frame.color, shift, clock(), key))
        if self.private is not None and layer is not None:
            ahead.private_future = self.private.submit(lambda: run_private(layer, frame))
        self._pending.append(ahead)

    def unstart(self) -> None:
        """The last started frame was not taken (the bracket raised): its work is dropped."""
        if self._pending:
            self._pending.pop().drop()

    def hand(self, items: list[Any], covered: type, mismatch: Callable[[Any], Any]) -> list[Any]:
        """Released items (one per pushed frame, in push order): each `covered` item gets its frame's
        `Ahead`; the work of a frame released withheld is dropped. `mismatch(item)`: what stands for
        an item whose frame is not the next one started (a bug: never another frame's work)."""
        out = []
        for item in items:
            ahead = self._pending.popleft() if self._pending else None
            if isinstance(item, covered) and ahead is not None and ahead.frame is item.frame:
                ahead.before = [a for a in self._withheld if a.schedule is ahead.schedule]
                self._withheld = []
                item.ahead = ahead
            else:
                if isinstance(item, covered):
                    item = mismatch(item)
                if ahead is not None:  # its forms' passes are still absorbed (before the next frame's)
                    if ahead.private_future is not None:
                        ahead.private_future.cancel()
                    self._withheld = [*self._withheld, ahead][-MAX_WITHHELD:]
            out.append(item)
        return out

    def close(self) -> None:
        for w in (self.forms, self.private):
            if w is not None:
                w.close()
