"""The ingest's device registry: which devices may speak, and the Ed25519 public key of each.

    devices.toml:   [devices."cam-017"]
                    ed25519 = "base64 of the 32-byte public key"     # from `crowdcap identity` on the device
                    # enabled = false                                 # revoke without deleting

    reg = Registry.load("devices.toml");  reg.check(device_id, message_id, message, signature) -> reason|None

A message passes when its device is registered and enabled and its signature verifies over
`wire.signed_bytes(message_id, message)`. Every failure is a reject reason the ingest counts:
`unknown_device`, `unsigned`, `bad_signature`. Reloaded when the file changes (checked at most every
few seconds), so registering a device needs no ingest restart. Errors name the file and the key.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from capture.config import ConfigError, read_toml
from uplink import wire
from uplink.identity import public_key_from_b64, verify


class Registry:
    def __init__(self, path: str | os.PathLike, reload_every: float = 2.0) -> None:
        self.path = Path(path)
        self.reload_every = reload_every
        self._keys: dict[str, object] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._load()

    @classmethod
    def load(cls, path: str | os.PathLike) -> Registry:
        return cls(path)

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            raise ConfigError(f"{self.path}: device registry not found") from None
        data = read_toml(self.path)
        devices = data.get("devices", {})
        if not isinstance(devices, dict):
            raise ConfigError(f"{self.path}: devices: expected a table of [devices.\"<id>\"] entries")
        keys = {}
        for dev, entry in devices.items():
            where = f"{self.path}: devices.{dev}"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: expected a table with ed25519 = \"...\"")
            unknown = set(entry) - {"ed25519", "enabled", "note"}
            if unknown:
                raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key (expected ed25519, enabled, note)")
            if entry.get("enabled", True) is False:
                continue
            if not isinstance(entry.get("enabled", True), bool):
                raise ConfigError(f"{where}.enabled: expected true or false")
            try:
                keys[dev] = public_key_from_b64(entry.get("ed25519", ""))
            except ValueError as e:
                raise ConfigError(f"{where}.ed25519: {e}") from None
        with self._lock:
            self._keys, self._mtime = keys, mtime

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.reload_every:
            return
        self._checked = now
        try:
            if self.path.stat().st_mtime != self._mtime:
                self._load()
        except (OSError, ConfigError):
            pass  # keep the last good registry; a broken edit must not open the door or close it

    def known(self, device_id: str) -> bool:
        self._maybe_reload()
        with self._lock:
            return device_id in self._keys

    def key(self, device_id: str) -> object | None:
        """The registered public key of `device_id` (None if unknown)."""
        self._maybe_reload()
        with self._lock:
            return self._keys.get(device_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def check(self, device_id: str, message_id: bytes, message: bytes, signature: bytes | None) -> str | None:
        """None if the message is the registered device's own; else the reject reason."""
        self._maybe_reload()
        with self._lock:
            key = self._keys.get(device_id)
        if key is None:
            return "unknown_device"
        if signature is None:
            return "unsigned"
        if not verify(key, signature, wire.signed_bytes(message_id, message)):
            return "bad_signature"
        return None
