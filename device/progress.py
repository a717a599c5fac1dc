"""Progress of long commands (demo, record) on stderr, and plain-words summaries.

On a terminal: a `rich` live bar that fits the terminal's width (it is redrawn in place, never a
staircase of wrapped `\\r` lines), ending by time (the bar is the seconds asked for). Not on a
terminal (a log, a pipe, CI): one plain line every `plain_every` seconds and a last one at the end.
Both show drops before redaction and frames withheld, not only the good news; the first drop is
also said at once, in words (a machine that cannot keep up is told while it runs, not only at the end).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

FIELDS = (("captured", "captured"), ("redacted", "redacted"), ("written", "written"), ("withheld", "withheld"),
          ("dropped", "dropped"), ("spooled", "spooled"), ("sent", "sent"))


class Progress:
    def __init__(self, title: str, total_s: float, *, stream: TextIO | None = None, console: Any = None,
                 plain_every: float = 5.0) -> None:
        self.title = title
        self.total_s = total_s
        self.stream = stream or sys.stderr
        self.plain_every = plain_every
        self._last_plain = -1e9
        self._fields: dict[str, Any] = {}
        self._live = None
        self._task = None
        self._closed = False
        self.warned_drops = False
        tty = console is not None or (hasattr(self.stream, "isatty") and self.stream.isatty())
        if tty:
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._console = console or Console(file=self.stream)
            self._live = RichProgress(TextColumn("{task.description}"), BarColumn(bar_width=None),
                                      TextColumn("{task.completed:>4.0f}/{task.total:.0f} s"), TimeRemainingColumn(),
                                      TextColumn("{task.fields[stats]}"), console=self._console,
                                      transient=False, expand=False)
            self._task = self._live.add_task(title, total=total_s, stats="")
            self._live.start()

    def update(self, elapsed_s: float, **fields: Any) -> None:
        """Counters by name (captured, redacted, withheld, dropped, spooled, sent, fps)."""
        self._fields = fields
        if not self.warned_drops and (fields.get("dropped") or 0) > 0:
            self.warned_drops = True
            fps = f" at {fields['fps']:.0f} fps" if "fps" in fields else ""
            msg = (f"{self.title}: NOT KEEPING UP{fps}: frames are being dropped before redaction (counted as "
                   "'dropped'; this machine cannot redact every frame — busy, or too slow for this policy)")
            if self._live is not None:
                self._console.print(msg)
            else:
                print(msg, file=self.stream, flush=True)
        if self._live is not None:
            self._live.update(self._task, completed=min(elapsed_s, self.total_s), stats=self._stats(compact=True))
            return
        now = time.monotonic()
        if now - self._last_plain >= self.plain_every:
            self._last_plain = now
            self._plain(elapsed_s)

    def _stats(self, compact: bool) -> str:
        f = self._fields
        parts = [f"{label} {f[key]}" for key, label in FIELDS if key in f]
        if "fps" in f:
            parts.append(f"{f['fps']:.1f} fps")
        return (" · " if compact else ", ").join(parts)

    def _plain(self, elapsed_s: float) -> None:
        print(f"{self.title}: {elapsed_s:.0f}/{self.total_s:.0f} s: {self._stats(compact=False)}", file=self.stream,
              flush=True)

    def close(self, elapsed_s: float | None = None) -> None:
        """End the display (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif self._fields:
            self._plain(self.total_s if elapsed_s is None else elapsed_s)


def words(value: Any) -> str:
    """A value for a person: counts as 'reason 2, other 1', nothing as 'none', no Python reprs."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {words(v)}" for k, v in value.items()) if value else "none"
    if isinstance(value, list | tuple):
        return ", ".join(words(v) for v in value) if value else "none"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
