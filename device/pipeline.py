"""The threaded pipeline: source → stage → stage → ... joined by bounded queues.

Backpressure policy (explicit, tested):
  * before the first stage (redaction) the queue drops its OLDEST frame when full and counts it
    under `capture.drops` — a fresh frame is worth more than a stale one, and nothing is lost that
    was ever accepted;
  * after the first stage a frame is *accepted*; from there on queues block (backpressure flows back
    to the capture queue) and a frame can only leave by being passed on, withheld with a reason, or
    failing with a counted error. Nothing is dropped silently.
Stages own no threads; each runs in its own thread here, and its metrics live in `self.metrics`.
A stage with `push`/`flush` (redaction's face bracket) may hold frames back: it gets them by `push`,
and what it releases (in order, possibly later) goes on; it is flushed at the end of the stream and
whenever no frame came for IDLE_FLUSH_S (a stall must not keep frames waiting). A frame held back has
not been accepted yet (it is before redaction); its stage latency includes the wait.
A stage with `part_of = NAME` is a later part of stage NAME (redaction over two threads, "redact" then
"redact-finish": redact/split.py): when it follows NAME, NAME is driven by `push_part`/`flush_part`
(same contract as push/flush, but its items are for the part; alone, NAME's push/flush do it all). Counting (`unfinished`) treats it as any stage; in `snapshot()`,
NAME's `frames_out` and `withheld` are the whole's — what left its last part, what any part withheld —
so every reader of NAME sees redaction as before; NAME's `parts` lists the parts, whose own entries
show them alone (latency: each part's own). A stage's `queue_size` (if any, smaller) bounds its input queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from capture.frame import FrameWithheld, RGBDFrame, Source, SourceError, Stage
from device.metrics import StageMetrics

log = logging.getLogger("crowdcap.pipeline")

_END = object()  # end-of-stream marker passed down the queues
IDLE_FLUSH_S = 0.25  # a stage holding frames back releases them after this long without a new frame


class DropOldestQueue:
    """Bounded FIFO that makes room by dropping the oldest item (and says so)."""

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Any] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()

    def put(self, item: Any, wait_while: Callable[[], bool] | None = None) -> bool:
        """Add `item`; True if an older item was dropped to make room. With `wait_while` (an offline
        source: a recording has no real time to keep up with), wait for room instead while it is true."""
        with self._cond:
            dropped = False
            if wait_while is not None and item is not _END:
                while len(self._items) >= self._maxsize and wait_while():
                    self._cond.wait(0.1)  # re-checks wait_while (stop) at least every 0.1 s
            if len(self._items) >= self._maxsize and item is not _END:
                self._items.popleft()
                dropped = True
            self._items.append(item)
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                raise queue.Empty
            item = self._items.popleft()
            self._cond.notify_all()  # room for a waiting offline producer
            return item

    def qsize(self) -> int:
        return len(self._items)


class Pipeline:
    """Runs `source` through `stages` in threads until the source ends, `max_frames`, or `stop()`."""

    def __init__(
        self,
        source: Source,
        stages: Sequence[Stage],
        *,
        capture_queue: int = 4,
        stage_queue: int = 8,
        max_frames: int | None = None,
        on_output: Callable[[RGBDFrame], None] | None = None,
    ) -> None:
        if not stages:
            raise ValueError("stages: a pipeline needs at least one stage")
        self.source = source
        self.stages = list(stages)
        self.max_frames = max_frames
        self.on_output = on_output
        self.capture = StageMetrics("capture")
        self.metrics = {s.name: StageMetrics(s.name) for s in self.stages}
        self.end_to_end = StageMetrics("end_to_end")
        self.source_faults: list[dict[str, Any]] = []  # gaps: {"error", "at", "seconds"}
        self._queues: list[Any] = [DropOldestQueue(capture_queue)]
        # a stage may ask for a smaller input queue (`queue_size`): frames queued there only add latency
        self._queues += [queue.Queue(maxsize=min(stage_queue, getattr(s, "queue_size", None) or stage_queue))
                         for s in self.stages[1:]]
        self._stop = threading.Event()
        self._running = threading.Event()  # cleared = capture paused
        self._running.set()
        self._threads: list[threading.Thread] = []
        self._rate_limit_fps: float | None = None
        self.started_at = 0.0
        self.finished = threading.Event()

    # -- control -----------------------------------------------------------------------------
    def start(self) -> None:
        self.started_at = time.monotonic()
        self._threads = [threading.Thread(target=self._capture_loop, name="capture", daemon=True)]
        for i, stage in enumerate(self.stages):
            self._threads.append(
                threading.Thread(target=self._stage_loop, args=(i, stage), name=f"stage-{stage.name}", daemon=True)
            )
        for t in self._threads:
            t.start()
        threading.Thread(target=self._watch_end, name="pipeline-end", daemon=True).start()

    def stop(self) -> None:
        """Stop capturing; frames already queued are still carried through (see `join`)."""
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def set_rate_limit(self, fps: float | None) -> None:
        """Cap the capture rate (thermal protection, live `capture.fps`); None lifts the cap."""
        self._rate_limit_fps = fps

    @property
    def rate_limit_fps(self) -> float | None:
        return self._rate_limit_fps

    def join(self, timeout: float | None = None) -> bool:
        """Wait for all threads to finish; True if they did within `timeout`."""
        return self.finished.wait(timeout)

    def run(self, timeout: float | None = None) -> bool:
        self.start()
        return self.join(timeout)

    # -- threads -----------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        q0 = self._queues[0]
        offline = bool(getattr(self.source, "offline", False))  # e.g. replay at pace fast
        count = 0
        backoff = 0.1
        last_t = 0.0
        try:
            while not self._stop.is_set():
                if not self._running.is_set():
                    self._running.wait(0.2)
                    continue
                if self.max_frames is not None and count >= self.max_frames:
                    break
                hold = getattr(self.source, "hold", None)  # e.g. device.zones.ZoneGate: a private place
                if hold is not None and hold():  # the camera is not read at all
                    self._stop.wait(0.1)
                    continue
                limit = self._rate_limit_fps
                if limit:
                    wait = last_t + 1.0 / limit - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        break
                try:
                    frame = self.source.read()
                except SourceError as e:
                    self._source_gap(str(e), backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                except Exception as e:  # noqa: BLE001 - an odd frame or a driver bug: a counted gap, not the
                    # end of capture (that exited 0, so systemd's Restart=on-failure never brought it back)
                    self._source_gap(f"{type(e).__name__}: {e}", backoff, kind=type(e).__name__)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
                if frame is None:
                    break
                last_t = time.monotonic()
                count += 1
                self.capture.frames_in += 1
                self.capture.record(0)
                # offline sources (a replay at pace fast) get backpressure: a recording is never dropped
                if q0.put(frame, wait_while=(lambda: not self._stop.is_set()) if offline else None):
                    self.capture.drops += 1
                self.capture.queue_depth = q0.qsize()
        except Exception as e:  # a broken source must not leave the pipeline hanging
            log.error("capture stopped: %s: %s", type(e).__name__, e)
            self.capture.errors[type(e).__name__] += 1
        finally:
            q0.put(_END)

    def _source_gap(self, error: str, wait: float, kind: str = "SourceError") -> None:
        self.capture.errors[kind] += 1
        t0 = time.monotonic()
        self._stop.wait(wait)
        if self.source_faults and self.source_faults[-1]["error"] == error:
            self.source_faults[-1]["seconds"] += time.monotonic() - t0
        else:
            self.source_faults.append({"error": error, "at": time.time(), "seconds": time.monotonic() - t0})
            del self.source_faults[:-20]
            log.warning("source fault, retrying: %s", error)
        try:  # reopen: a camera that was unplugged needs it; synthetic/replay ignore it
            self.source.close()
            self.source.open()
        except Exception:  # noqa: BLE001 - still down (the next read says how): retried after backoff
            pass

    def _stage_loop(self, index: int, stage: Stage) -> None:
        inq = self._queues[index]
        outq = self._queues[index + 1] if index + 1 < len(self._queues) else None
        m = self.metrics[stage.name]
        push, flush = getattr(stage, "push", None), getattr(stage, "flush", None)
        after = self.stages[index + 1] if index + 1 < len(self.stages) else None
        if getattr(after, "part_of", None) == stage.name:  # its later part follows: hand over the first part's items
            push, flush = getattr(stage, "push_part", None), getattr(stage, "flush_part", None)
        if callable(push) and callable(flush):
            self._buffered_loop(inq, m, push, flush, outq)
            return
        while True:
            item = inq.get()
            if item is _END:
                break
            m.frames_in += 1
            m.queue_depth = inq.qsize()
            t0 = time.monotonic_ns()
            try:
                out = stage.apply(item)
            except FrameWithheld as e:
                m.withheld[e.reason] += 1
                continue
            except Exception as e:  # counted, never silent; the frame does not go on
                self._stage_error(m, item, e)
                continue
            self._emit(m, out, t0, outq)
        if outq is not None:
            outq.put(_END)

    def _buffered_loop(self, inq: Any, m: StageMetrics, push: Callable[[RGBDFrame], list[Any]],
                       flush: Callable[[], list[Any]], outq: Any) -> None:
        """A stage that holds frames back (redaction's face bracket: `push` releases frames later, in
        order, one item per pushed frame: a frame or the FrameWithheld that stood for it; `flush`
        releases the rest). A stream that stalls (paused, camera gone) is flushed after IDLE_FLUSH_S,
        so no frame waits on a frame that may never come; the end of the stream flushes too."""
        pushed: deque[int] = deque()  # push times of frames inside the stage, oldest first
        idle_s = max(IDLE_FLUSH_S, 2.0 / max(float(getattr(self.source, "fps", 30.0) or 30.0), 1e-3))
        while True:
            try:
                item = inq.get(timeout=idle_s if pushed else None)
            except queue.Empty:
                try:
                    self._released(m, flush(), pushed, outq)
                except Exception as e:
                    self._stage_error(m, None, e)
                continue
            if item is _END:
                break
            m.frames_in += 1
            m.queue_depth = inq.qsize()
            pushed.append(time.monotonic_ns())
            try:
                released = push(item)
            except Exception as e:  # counted, never silent; the stage keeps what it already held
                pushed.pop()
                self._stage_error(m, item, e)
                continue
            self._released(m, released, pushed, outq)
        try:
            self._released(m, flush(), pushed, outq)
        except Exception as e:
            self._stage_error(m, None, e)
        if pushed:  # the stage lost frames it had taken: counted, never silent
            m.errors["lost_in_stage"] += len(pushed)
        if outq is not None:
            outq.put(_END)

    def _released(self, m: StageMetrics, items: list[Any], pushed: deque[int], outq: Any) -> None:
        for out in items:
            t0 = pushed.popleft() if pushed else time.monotonic_ns()
            if isinstance(out, FrameWithheld):
                m.withheld[out.reason] += 1
            else:  # the stage latency includes the wait for a later frame
                self._emit(m, out, t0, outq)

    def _emit(self, m: StageMetrics, out: RGBDFrame, t0: int, outq: Any) -> None:
        m.record(time.monotonic_ns() - t0)
        if outq is not None:
            outq.put(out)  # blocks when full: backpressure, never a drop after acceptance
        else:
            self.end_to_end.record(time.monotonic_ns() - out.t_mono_ns)
            if self.on_output is not None:
                self.on_output(out)

    @staticmethod
    def _stage_error(m: StageMetrics, item: Any, e: Exception) -> None:
        m.errors[type(e).__name__] += 1
        if sum(m.errors.values()) <= 5:
            log.error("stage %s failed on seq %s: %s: %s", m.name, getattr(item, "seq", "?"), type(e).__name__, e)

    def _watch_end(self) -> None:
        for t in self._threads:
            t.join()
        self.finished.set()

    # -- status ------------------------------------------------------------------------------
    def stalled_stage(self, after_s: float) -> str | None:
        """Name of a stage that has had input waiting but produced nothing for `after_s` seconds.

        Checked from the last stage back: a hung stage also starves the ones before it of queue space,
        and the one to name is the furthest downstream."""
        now = time.monotonic_ns()
        for i, stage in reversed(list(enumerate(self.stages))):
            m = self.metrics[stage.name]
            waiting = self._queues[i].qsize() > 0
            since = now - (m.last_out_ns or m.started_ns)
            if waiting and since > after_s * 1e9:
                return stage.name
        return None

    def unfinished(self) -> int:
        """Accepted frames (past the first stage) not yet delivered, withheld or failed: queued between
        stages, blocked on a full queue, or inside a later stage. Non-zero after a timed-out join."""
        done = self.metrics[self.stages[-1].name].frames_out
        for stage in self.stages[1:]:
            m = self.metrics[stage.name]
            done += sum(m.withheld.values()) + sum(m.errors.values())
        return max(0, self.metrics[self.stages[0].name].frames_out - done)

    def snapshot(self) -> dict[str, Any]:
        stages = {"capture": self.capture.snapshot()}
        stages.update({name: m.snapshot() for name, m in self.metrics.items()})
        for i, stage in enumerate(self.stages):
            stages[stage.name]["queue_depth"] = self._queues[i].qsize()
        for stage in self.stages:
            whole = stages.get(getattr(stage, "part_of", None) or "")
            if whole is not None:
                part = stages[stage.name]
                whole["frames_out"] = part["frames_out"]
                whole["withheld"] = dict(Counter(whole["withheld"]) + Counter(part["withheld"]))
                whole["parts"] = [*whole.get("parts", []), stage.name]
        p50, p99 = self.end_to_end.latency_ms()
        return {
            "running": not self.finished.is_set(),
            "paused": self.paused,
            "uptime_s": round(time.monotonic() - self.started_at, 1) if self.started_at else 0.0,
            "frames_captured": self.capture.frames_in,
            "frames_dropped": self.capture.drops,
            "frames_out": self.end_to_end.frames_out,
            "latency_ms_p50": round(p50, 3),
            "latency_ms_p99": round(p99, 3),
            "stages": stages,
            "source_faults": list(self.source_faults),
        }
