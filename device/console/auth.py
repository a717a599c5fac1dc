"""Operator PIN: stored as an scrypt hash in config; failed logins lock the console for a growing delay."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from device.configfile import atomic_write

_PREFIX = "scrypt"
_MAX_LOCKOUT_S = 3600.0


def hash_pin(pin: str, *, n: int = 2**14, r: int = 8, p: int = 1) -> str:
    """'scrypt$n$r$p$salt$hash' (base64) for `pin`; what `crowdcap console hash-pin` prints."""
    if not pin or len(pin) > 128:
        raise ValueError("pin: expected 1-128 characters")
    salt = os.urandom(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    b64 = base64.b64encode
    return f"{_PREFIX}${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def check_hash(stored: str) -> None:
    """Raise ValueError naming what is wrong with a stored hash."""
    _parse(stored)


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _PREFIX:
        raise ValueError("console.pin_hash: expected 'scrypt$N$r$p$salt$hash' (crowdcap console hash-pin)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise ValueError("console.pin_hash: malformed numbers or base64") from None
    if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16 or len(digest) < 16:
        raise ValueError("console.pin_hash: scrypt parameters out of range")
    return n, r, p, salt, digest


def verify_pin(pin: str, stored: str) -> bool:
    """True if `pin` matches `stored`; False for a wrong PIN or an unusable hash (fail closed)."""
    try:
        n, r, p, salt, digest = _parse(stored)
    except ValueError:
        return False
    if len(pin) > 128:
        return False
    got = hashlib.scrypt(pin.encode(errors="replace"), salt=salt, n=n, r=r, p=p, maxmem=256 * 2**20,
                         dklen=len(digest))
    return hmac.compare_digest(got, digest)


@dataclass
class LoginResult:
    ok: bool
    message: str
    retry_after_s: float = 0.0


class LoginGuard:
    """Counts failed logins for the whole device: after `max_failures` in a row the console locks for
    `lockout_s`, doubling with each further lockout (capped at an hour). A success resets it.
    Shared by every console session, so reconnecting does not reset the count; with `state_file` it
    also survives restarts and power cycles (the remaining lock time starts again at boot)."""

    def __init__(self, *, max_failures: int = 5, lockout_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, state_file: Path | None = None) -> None:
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self._clock = clock
        self._failures = 0
        self._lockouts = 0
        self._locked_until = 0.0
        self._lock = threading.Lock()
        self.total_failures = 0
        self.state_file = state_file
        self._load()

    def _load(self) -> None:
        if self.state_file is None:
            return
        try:
            d = json.loads(self.state_file.read_text())
            self._failures, self._lockouts = int(d["failures"]), int(d["lockouts"])
            self._locked_until = self._clock() + min(float(d["locked_for_s"]), _MAX_LOCKOUT_S)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError):
            # a damaged record must not unlock the console: lock once, as after max_failures
            self._lockouts = max(self._lockouts, 1)
            self._locked_until = self._clock() + self.lockout_s

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = {"failures": self._failures, "lockouts": self._lockouts, "locked_for_s": self.locked_for()}
        try:
            atomic_write(self.state_file, json.dumps(data).encode(), 0o600)
        except OSError:
            pass  # a read-only state dir must not stop logins; the in-memory count still applies

    def locked_for(self) -> float:
        return max(0.0, self._locked_until - self._clock())

    def attempt(self, pin: str, stored: str) -> LoginResult:
        with self._lock:
            wait = self.locked_for()
            if wait > 0:
                return LoginResult(False, f"console locked: try again in {wait:.0f} s", wait)
            if not stored:
                return LoginResult(False, "no PIN configured: set console.pin_hash (crowdcap console hash-pin)")
            if verify_pin(pin, stored):
                if self._failures or self._lockouts:
                    self._failures = self._lockouts = 0
                    self._save()
                return LoginResult(True, "logged in")
            self._failures += 1
            self.total_failures += 1
            if self._failures >= self.max_failures:
                self._failures = 0
                delay = min(self.lockout_s * 2**self._lockouts, _MAX_LOCKOUT_S)
                self._lockouts += 1
                self._locked_until = self._clock() + delay
                self._save()
                return LoginResult(False, f"wrong PIN; console locked for {delay:.0f} s", delay)
            self._save()
            left = self.max_failures - self._failures
            return LoginResult(False, f"wrong PIN ({left} attempt{'s' if left != 1 else ''} before lockout)")
