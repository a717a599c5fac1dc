"""Bytes from a terminal → complete lines. Never raises on input; every oddity becomes an event.

Handles: CR, LF and CRLF line ends; backspace/DEL (removes one whole UTF-8 character); Ctrl-U (clear
line); Ctrl-C and BREAK (NUL bytes, as a serial BREAK reads) cancel the line; other control bytes and
ANSI escape sequences (arrow keys) are ignored; a line over `max_line` bytes is discarded up to its end
and reported once; a line that is not UTF-8 is reported instead of run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_LINE = 4096

EventKind = Literal["line", "error", "cancel"]


@dataclass
class Event:
    kind: EventKind
    text: str = ""


class LineEditor:
    def __init__(self, max_line: int = MAX_LINE, *, echo: bool = True,
                 secret_prefixes: tuple[bytes, ...] = (b"login ",)) -> None:
        self.max_line = max_line
        self.echo = echo
        # what follows one of these at the start of a line (a PIN) echoes as '*'; `masked` masks a
        # whole line (the answer to a PIN prompt)
        self.secret_prefixes = secret_prefixes
        self.masked = False
        self._buf = bytearray()
        self._overflow = False
        self._escape = 0  # 0 = normal, 1 = saw ESC, 2 = inside CSI
        self._last_cr = False

    @property
    def pending(self) -> bytes:
        """The half-typed line (for tests and redraws)."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> tuple[list[Event], bytes]:
        """Events completed by `data`, and the bytes to echo back to the terminal."""
        events: list[Event] = []
        echo = bytearray()
        for b in data:
            if self._escape:
                if b < 0x20 or b > 0x7E:
                    self._escape = 0  # a stray ESC never swallows a line end or a BREAK
                else:
                    # ESC [ ... final byte (0x40-0x7e); ESC X (two bytes) for anything else
                    if self._escape == 1:
                        self._escape = 2 if b == 0x5B else 0
                    elif 0x40 <= b <= 0x7E:
                        self._escape = 0
                    continue
            was_cr, self._last_cr = self._last_cr, False
            if b in (0x0D, 0x0A):
                if b == 0x0A and was_cr:
                    continue  # CRLF: the CR already ended the line
                self._last_cr = b == 0x0D
                echo += b"\r\n"
                events.append(self._finish())
            elif b in (0x08, 0x7F):
                if self._buf and not self._overflow:
                    self._erase_char()
                    echo += b"\b \b"
            elif b in (0x03, 0x00):  # Ctrl-C, BREAK
                self._reset()
                echo += b"^C\r\n"
                events.append(Event("cancel"))
            elif b == 0x15:  # Ctrl-U
                if self._buf and not self._overflow:
                    echo += b"\b \b" * _char_count(self._buf)
                self._buf.clear()
            elif b == 0x1B:
                self._escape = 1
            elif b < 0x20 and b != 0x09:
                continue  # other control bytes: ignored
            elif self._overflow:
                continue
            elif len(self._buf) >= self.max_line:
                self._overflow = True
                self._buf.clear()
            else:
                secret = self.masked or any(self._buf.lower().startswith(p) for p in self.secret_prefixes)
                self._buf.append(b)
                if not secret:
                    echo.append(b)
                elif (b & 0xC0) != 0x80:  # one '*' per character, not per UTF-8 byte
                    echo += b"*"
        return events, bytes(echo) if self.echo else b""

    def _finish(self) -> Event:
        if self._overflow:
            self._reset()
            return Event("error", f"line too long (limit {self.max_line} bytes); discarded")
        raw = bytes(self._buf)
        self._reset()
        try:
            return Event("line", raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            return Event("error", f"line is not valid UTF-8 (byte {e.start}); discarded")

    def _erase_char(self) -> None:
        # drop continuation bytes (10xxxxxx) and then the lead byte: one whole character
        while self._buf and (self._buf[-1] & 0xC0) == 0x80:
            self._buf.pop()
        if self._buf:
            self._buf.pop()

    def _reset(self) -> None:
        self._buf.clear()
        self._overflow = False


def _char_count(buf: bytes | bytearray) -> int:
    return sum(1 for b in buf if (b & 0xC0) != 0x80)
