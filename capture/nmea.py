"""GPS from a serial NMEA 0183 receiver: GGA and RMC sentences, checksums verified, bad input counted.

`NmeaParser.feed(bytes)` takes whatever arrives (partial lines, noise, binary UBX mixed in) and
returns the fixes it could parse; it never raises on input. `NmeaReader` owns the serial port
(`serial.serial_for_url`, so `loop://` and `socket://` work in tests and on a bench), is polled
without blocking by a source or used as a pipeline stage (`apply` attaches samples to `frame.gps`),
and reopens an unplugged receiver with backoff without ever failing the capture.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from capture.configcore import InputError
from capture.frame import RGBDFrame
from capture.wrapped import WrappedSource

log = logging.getLogger(__name__)

MAX_SENTENCE = 120  # NMEA says 82 characters; some receivers exceed it a little
_KNOTS = 0.514444  # m/s


@dataclass(frozen=True)
class GpsFix:
    """One parsed GGA or RMC sentence. Positions in signed decimal degrees (WGS84), None if absent."""

    kind: str  # "GGA" | "RMC"
    t_mono_ns: int  # when the sentence was read (the frame clock)
    utc: str | None  # hhmmss.ss from the receiver
    lat: float | None
    lon: float | None
    valid: bool  # GGA quality > 0, or RMC status A
    quality: int | None = None  # GGA: 0 none, 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, ...
    satellites: int | None = None
    hdop: float | None = None
    alt_m: float | None = None  # above mean sea level
    speed_mps: float | None = None
    course_deg: float | None = None
    date: str | None = None  # ddmmyy (RMC)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class NmeaError(InputError):
    """Why one sentence was refused (counted by the parser, never raised out of `feed`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def checksum(body: str) -> int:
    """XOR of the characters between '$' and '*'."""
    value = 0
    for ch in body.encode("ascii"):
        value ^= ch
    return value


def _float(field: str, name: str) -> float | None:
    if not field:
        return None
    try:
        v = float(field)
    except ValueError:
        raise NmeaError(f"bad_{name}") from None
    if not math.isfinite(v):
        raise NmeaError(f"bad_{name}")
    return v


def _int(field: str, name: str) -> int | None:
    if not field:
        return None
    if not field.isdigit():
        raise NmeaError(f"bad_{name}")
    return int(field)


def _angle(value: str, hemi: str, degree_digits: int, limit: float) -> float | None:
    """ddmm.mmmm / dddmm.mmmm + N/S/E/W → signed degrees."""
    if not value and not hemi:
        return None
    if len(value) < degree_digits + 2 or hemi not in ("N", "S", "E", "W") or not value[:degree_digits].isdigit():
        raise NmeaError("bad_position")
    minutes = _float(value[degree_digits:], "position")
    assert minutes is not None
    degrees = int(value[:degree_digits]) + minutes / 60.0
    if not 0.0 <= minutes < 60.0 or degrees > limit:
        raise NmeaError("bad_position")
    return -degrees if hemi in ("S", "W") else degrees


def _time(field: str) -> str | None:
    if field and (len(field) < 6 or not field[:6].isdigit() or int(field[:2]) > 23 or int(field[2:4]) > 59
                  or int(field[4:6]) > 60):
        raise NmeaError("bad_time")
    return field or None


def parse_sentence(line: str, t_mono_ns: int = 0) -> GpsFix | None:
    """A fix from one sentence ('$GPGGA,...*hh'), None for a valid sentence of another type.

    Raises NmeaError(reason) for a sentence that is malformed or fails its checksum.
    """
    line = line.strip()
    if not line.startswith("$") or len(line) > MAX_SENTENCE:
        raise NmeaError("malformed")
    body, star, given = line[1:].rpartition("*")
    if not star:
        raise NmeaError("no_checksum")
    if len(given) != 2 or any(c not in "0123456789ABCDEFabcdef" for c in given) or not body.isascii():
        raise NmeaError("malformed")
    if checksum(body) != int(given, 16):
        raise NmeaError("bad_checksum")
    fields = body.split(",")
    address = fields[0]
    if len(address) != 5 or not address.isalnum():
        raise NmeaError("malformed")
    kind = address[2:]  # talker (GP, GN, GL, GA, BD, ...) is ignored: a fix is a fix
    if kind == "GGA":
        if len(fields) < 15:
            raise NmeaError("short_sentence")
        quality = _int(fields[6], "quality")
        return GpsFix("GGA", t_mono_ns, _time(fields[1]), _angle(fields[2], fields[3], 2, 90.0),
                      _angle(fields[4], fields[5], 3, 180.0), bool(quality), quality=quality,
                      satellites=_int(fields[7], "satellites"), hdop=_float(fields[8], "hdop"),
                      alt_m=_float(fields[9], "altitude"))
    if kind == "RMC":
        if len(fields) < 12:
            raise NmeaError("short_sentence")
        if fields[2] not in ("A", "V"):
            raise NmeaError("bad_status")
        speed = _float(fields[7], "speed")
        date = fields[9]
        if date and (len(date) != 6 or not date.isdigit()):
            raise NmeaError("bad_date")
        return GpsFix("RMC", t_mono_ns, _time(fields[1]), _angle(fields[3], fields[4], 2, 90.0),
                      _angle(fields[5], fields[6], 3, 180.0), fields[2] == "A",
                      speed_mps=None if speed is None else speed * _KNOTS,
                      course_deg=_float(fields[8], "course"), date=date or None)
    return None


class NmeaParser:
    """Splits a byte stream into sentences and parses them; `counts` says what happened to each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._buffer = bytearray()

    def feed(self, data: bytes, t_mono_ns: int | None = None) -> list[GpsFix]:
        t = time.monotonic_ns() if t_mono_ns is None else t_mono_ns
        self._buffer += data
        fixes: list[GpsFix] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_SENTENCE:  # noise without newlines: keep only a possible start
                    start = self._buffer.rfind(b"$")
                    self.counts["overlong"] += 1
                    del self._buffer[:start if start > len(self._buffer) - MAX_SENTENCE else len(self._buffer)]
                return fixes
            raw = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            start = raw.rfind(b"$")  # resync: noise before the last '$' is dropped
            if start < 0:
                if raw.strip():
                    self.counts["malformed"] += 1
                continue
            if start > 0:
                self.counts["noise"] += 1
            try:
                fix = parse_sentence(raw[start:].decode("ascii"), t)
            except UnicodeDecodeError:
                self.counts["malformed"] += 1
                continue
            except NmeaError as e:
                self.counts[e.reason] += 1
                continue
            if fix is None:
                self.counts["other"] += 1
            else:
                self.counts[fix.kind] += 1
                fixes.append(fix)

    @property
    def bad(self) -> int:
        """Sentences refused (checksum, malformed, bad fields) — not the other types we ignore."""
        return sum(v for k, v in self.counts.items() if k not in ("GGA", "RMC", "other", "noise"))


class NmeaReader:
    """A GPS receiver on a serial port, polled without blocking; also a pipeline stage named "gps".

    `poll()` returns the fixes read since the last poll (oldest first, at most `max_pending`).
    A missing or unplugged receiver is retried every `retry_s` seconds; frames keep flowing without GPS.
    """

    name = "gps"

    def __init__(self, url: str, baudrate: int = 9600, retry_s: float = 2.0, max_pending: int = 64) -> None:
        self.url = url
        self.baudrate = baudrate
        self.retry_s = retry_s
        self.max_pending = max_pending
        self.parser = NmeaParser()
        self.latest: GpsFix | None = None
        self.port_errors = 0
        self._port: Any = None
        self._next_try = 0.0
        self._pending: list[GpsFix] = []

    @property
    def port(self) -> Any:
        """The open pyserial port (or None): for tests and diagnostics."""
        return self._port

    def open(self) -> bool:
        """Open the port now; False (and counted) if it is not there."""
        import serial

        self.close()
        try:
            self._port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0)
        except (serial.SerialException, OSError, ValueError) as e:
            self._port_failed(e)
            return False
        return True

    def _port_failed(self, error: Exception) -> None:
        self.port_errors += 1
        self._next_try = time.monotonic() + self.retry_s
        if self.port_errors == 1 or self.port_errors % 100 == 0:
            log.warning("gps %s: %s (retrying every %.0f s)", self.url, error, self.retry_s)
        self.close()

    def poll(self) -> list[GpsFix]:
        import serial

        if self._port is None:
            if time.monotonic() < self._next_try or not self.open():
                return self._take()
        try:
            waiting = self._port.in_waiting
            data = self._port.read(waiting) if waiting else b""
        except (serial.SerialException, OSError) as e:
            self._port_failed(e)
            return self._take()
        if data:
            for fix in self.parser.feed(data):
                self._pending.append(fix)
                if fix.lat is not None and fix.valid:
                    self.latest = fix
            del self._pending[:-self.max_pending]
        return self._take()

    def _take(self) -> list[GpsFix]:
        out, self._pending = self._pending, []
        return out

    def apply(self, frame: RGBDFrame) -> RGBDFrame:
        """Attach the fixes since the previous frame (as dicts, JSON-ready) to `frame.gps`."""
        fixes = self.poll()
        if not fixes:
            return frame
        return frame.replace(gps=frame.gps + tuple(f.to_dict() for f in fixes))

    def stats(self) -> dict[str, Any]:
        return {"port": self.url, "connected": self._port is not None, "port_errors": self.port_errors,
                "bad_sentences": self.parser.bad, "counts": dict(self.parser.counts),
                "latest": None if self.latest is None else self.latest.to_dict()}

    def close(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except Exception:  # noqa: BLE001 - closing a vanished port may fail any way it likes
                pass
            self._port = None


class GpsSource(WrappedSource):
    """Any Source with GPS: each frame gets the fixes received since the previous frame in `frame.gps`.

    A GPS fault never becomes a capture fault; a camera reconnect (close + open) reopens the port too.
    """

    def __init__(self, source: Any, reader: NmeaReader) -> None:
        super().__init__(source)
        self.reader = reader

    def open(self) -> None:
        self.source.open()
        if self.reader.port is None:
            self.reader.open()

    def read(self) -> RGBDFrame | None:
        frame = self.source.read()
        return None if frame is None else self.reader.apply(frame)

    def close(self) -> None:
        self.source.close()
        self.reader.close()
