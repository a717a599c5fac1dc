"""The device's signing identity: an Ed25519 key made at first start, kept in the device's state_dir.

    key = DeviceKey.load_or_create(state_dir)      # <state_dir>/device-key.pem (PKCS#8, mode 0600)
    key.sign(data) -> 64 bytes;  key.public_b64     # what the backend's device registry holds
    registry_entry(device_id, key) -> TOML text     # `crowdcap identity` prints it for the operator

Why Ed25519 and not an HMAC secret: the backend holds only public keys, so a leaked registry (or a
compromised ingest) cannot forge frames, and nothing secret has to be copied onto the device — the
key is born there and never leaves it. Provisioning = registering the public key once
(docs/wire-format.md "Frame signatures", docs/deployment.md).

`link_warnings(cfg)` lists what an installer should fix about the broker link (anonymous plain
mqtt:// to a non-loopback host): the device logs them once at start.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_FILE = "device-key.pem"


class DeviceKey:
    def __init__(self, private: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._private = private
        self.path = path
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_b64 = base64.b64encode(raw).decode()

    @classmethod
    def load_or_create(cls, state_dir: str | os.PathLike) -> DeviceKey:
        """The key in `<state_dir>/device-key.pem`, made (atomically, mode 0600) if missing. A file that
        is not an Ed25519 private key is an error naming it, never silently replaced: the backend
        knows this device by that key."""
        path = Path(state_dir) / KEY_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, pem)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # never overwrite a key another process made meanwhile
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
            return cls.load_or_create(state_dir)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: not a PEM private key ({e}); restore it or delete it to make a new "
                             "one (then register the new public key with the backend)") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: expected an Ed25519 private key")
        return cls(key, path)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from base64 of its 32 raw bytes; ValueError saying what is wrong."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes of Ed25519 public key, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(public: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        public.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def registry_entry(device_id: str, key: DeviceKey) -> str:
    """The TOML block a backend's device registry needs for this device."""
    return f'[devices."{device_id}"]\ned25519 = "{key.public_b64}"\n'


def _loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def link_warnings(broker: str, username: str = "") -> list[str]:
    """What is unsafe about this broker link, as sentences an installer can act on."""
    from uplink.config import parse_broker

    if not broker:
        return []
    try:
        _, host, _port, tls = parse_broker(broker)
    except ValueError:
        return []
    out = []
    if not tls and not _loopback(host):
        out.append(f"uplink.broker {broker} is plain mqtt:// to a non-loopback host: frames and credentials "
                   "cross the network unencrypted; use mqtts:// with uplink.tls_ca (docs/deployment.md)")
        if not username:
            out.append("uplink.username is empty: the broker accepts anonymous clients, so anyone on the "
                       "network can read this device's stream; set username/password (docs/deployment.md)")
    return out
