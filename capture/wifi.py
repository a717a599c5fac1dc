"""Which Wi-Fi networks the device sees: a small seam so zones can use them and tests feed real files.

    WifiFile(path).seen()            # a file of `SSID:BSSID` (nmcli -t) or `SSID,BSSID` lines
    WifiCommand("nmcli -t -f SSID,BSSID dev wifi").seen()   # run every `refresh_s` on its own thread

`seen()` never blocks and never raises: a set of SSIDs and lower-case BSSIDs (empty when unknown),
with `error` saying why the last read failed.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import threading
from pathlib import Path
from typing import Protocol

_SPLIT = re.compile(r"(?<!\\)[:,]")
_BSSID_ESC = re.compile(r"([0-9A-Fa-f]{2}(?:\\?:[0-9A-Fa-f]{2}){5})")


class WifiScanner(Protocol):
    error: str

    def seen(self) -> set[str]: ...


def parse_networks(text: str) -> set[str]:
    """SSIDs and BSSIDs from nmcli -t (escaped colons) or comma/colon separated lines."""
    out: set[str] = set()
    for line in text.splitlines()[:512]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for m in _BSSID_ESC.finditer(line):
            out.add(m.group(1).replace("\\:", ":").lower())
        rest = _BSSID_ESC.sub("", line)
        for tok in _SPLIT.split(rest):
            tok = tok.replace("\\:", ":").strip()
            if tok and len(tok) <= 64:
                out.add(tok)
    return out


class WifiFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.error = ""
        self._cache: tuple[float, set[str]] = (-1.0, set())

    def seen(self) -> set[str]:
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self._cache[0]:
                self._cache = (mtime, parse_networks(self.path.read_text(errors="replace")[:65536]))
            self.error = ""
            return self._cache[1]
        except OSError as e:
            self.error = f"{self.path}: {e.strerror or e}"
            return set()


class WifiCommand:
    def __init__(self, command: str, refresh_s: float = 5.0, timeout_s: float = 4.0) -> None:
        self.argv = shlex.split(command)
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.error = ""
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def refresh(self) -> None:
        try:
            out = subprocess.run(self.argv, capture_output=True, text=True, timeout=self.timeout_s, check=False)
            if out.returncode != 0:
                self.error = f"{self.argv[0]} exited {out.returncode}: {out.stderr.strip()[:200]}"
                self._seen = set()
            else:
                self._seen, self.error = parse_networks(out.stdout[:65536]), ""
        except (OSError, subprocess.SubprocessError) as e:
            self.error, self._seen = f"{self.argv[0]}: {e}", set()
        self.runs += 1

    def seen(self) -> set[str]:
        if self._thread is None:
            self.refresh()  # first call: synchronous, so the first frame is judged on real data
            self._thread = threading.Thread(target=self._loop, name="wifi-scan", daemon=True)
            self._thread.start()
        return self._seen

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()

    def close(self) -> None:
        self._stop.set()


def open_scanner(command: str = "", path: str = "") -> WifiScanner | None:
    if path:
        return WifiFile(path)
    if command:
        return WifiCommand(command)
    return None


