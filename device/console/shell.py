"""The console shell: bytes in (from a serial port or a test), one-line JSON replies out (Tasmota's
convention), or text: `--text` after a command, or `format text` for the rest of the session
(`format json` back). `login` alone prompts for the PIN and echoes '*' (so does `login PIN`).

It never raises on input and never blocks on a slow peer: the transport's write drops output it cannot
send. A flood of lines is rate-limited (excess lines are dropped and the drop is reported once).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable
from typing import Any, Protocol

from device.console.lineeditor import MAX_LINE, LineEditor
from device.control import Controller, Reply, Session

_LINE_END = re.compile(rb"([\r\n\x00\x03])")
BANNER = ("crowdcap console: 'help' lists commands; replies are JSON lines: add --text to a command for text, "
          "or 'format text' for the session")


class Backend(Protocol):
    """Runs one command; the console's login state lives behind it (per connection)."""

    def execute(self, argv: list[str]) -> Reply: ...


class LocalBackend:
    """The command layer in this process (`crowdcap run` hosting the console itself)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.session = Session(origin="console")

    def execute(self, argv: list[str]) -> Reply:
        return self.controller.execute(argv, self.session)


class Shell:
    def __init__(self, backend: Backend, write: Callable[[bytes], None], *, max_line: int = MAX_LINE,
                 max_rate: float = 20.0, burst: int = 40, clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self._write = write
        self.editor = LineEditor(max_line)
        self.logged_in = False
        self.max_rate = max_rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = clock()
        self._clock = clock
        self.dropped_lines = 0
        self._unreported_drops = 0
        self.commands_run = 0
        self.json_replies = True  # Tasmota: replies are JSON; `format text` / --text for people
        self._pin_prompt = False

    def start(self) -> None:
        self._write(f"\r\n{BANNER}\r\n".encode())
        self._prompt()

    def feed(self, data: bytes) -> None:
        # one line ending at a time, so each reply follows its own line's echo
        parts = _LINE_END.split(data)
        for i in range(0, len(parts), 2):
            piece = parts[i] + (parts[i + 1] if i + 1 < len(parts) else b"")
            if piece:
                self._feed_piece(piece)

    def _feed_piece(self, data: bytes) -> None:
        events, echo = self.editor.feed(data)
        if echo:
            self._write(echo)
        for ev in events:
            if ev.kind == "line":
                if not self._admit():
                    continue
                self._run_line(ev.text)
            elif ev.kind == "error":
                self._emit_text(f"error: {ev.text}")
            self._prompt()

    # -- internals -------------------------------------------------------------------------------
    def _admit(self) -> bool:
        """Token bucket: `max_rate` lines/s sustained, `burst` at once."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.max_rate)
        self._last = now
        if self._tokens < 1:
            self.dropped_lines += 1
            self._unreported_drops += 1
            return False
        self._tokens -= 1
        if self._unreported_drops:
            self._emit_text(f"warning: input flood, {self._unreported_drops} lines dropped")
            self._unreported_drops = 0
        return True

    def _run_line(self, text: str) -> None:
        if self._pin_prompt:  # the answer to `login`'s PIN prompt (echoed as '*')
            self._pin_prompt = False
            self.editor.masked = False
            text = text.strip()
            if not text:
                self._emit_text("login cancelled")
                return
            self._execute(["login", text], self.json_replies)
            return
        try:
            argv = shlex.split(text)
        except ValueError as e:
            self._emit_text(f"error: cannot parse line: {e}")
            return
        as_json = False if "--text" in argv else True if "--json" in argv else self.json_replies
        argv = [a for a in argv if a not in ("--json", "--text")]
        if not argv:
            return
        if argv[0].lower() == "format":
            self._format(argv[1:], as_json)
            return
        if [a.lower() for a in argv] == ["login"]:
            self._pin_prompt = True
            self.editor.masked = True
            self._write(b"PIN: ")
            return
        self._execute(argv, as_json)

    def _format(self, args: list[str], as_json: bool) -> None:
        if args and args[0].lower() in ("json", "text"):
            self.json_replies = args[0].lower() == "json"
        elif args:
            self._emit_text('{"ok":false,"cmd":"format","error":"usage: format [json|text]"}' if as_json
                            else "error: usage: format [json|text]")
            return
        mode = "json" if self.json_replies else "text"
        self._emit_text(json.dumps({"ok": True, "cmd": "format", "format": mode}, separators=(",", ":"))
                        if as_json else f"replies: {mode}")  # this line's own format (as asked)

    def _execute(self, argv: list[str], as_json: bool) -> None:
        self.commands_run += 1
        try:
            reply = self.backend.execute(argv)
        except Exception as e:  # a broken backend must not kill the console
            reply = Reply(False, argv[0], {"error": f"{type(e).__name__}: {e}"}, f"error: {e}")
        if reply.cmd in ("login", "logout") or "logged_in" in reply.data:
            self.logged_in = bool(reply.data.get("logged_in", False))
        if reply.data.get("error", "").startswith("login required"):
            self.logged_in = False
        if as_json:
            self._emit_text(json.dumps(reply.to_dict(), separators=(",", ":"), default=_jsonable))
        elif reply.text:
            self._emit_text(reply.text)

    def _emit_text(self, text: str) -> None:
        self._write(text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "replace") + b"\r\n")

    def _prompt(self) -> None:
        if self._pin_prompt:
            return  # "PIN: " is the prompt
        self._write(b"crowdcap# " if self.logged_in else b"crowdcap> ")


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, set | frozenset | tuple):
        return list(v)
    return str(v)
