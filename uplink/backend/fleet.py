"""Fleet keys and signed updates (the backend's side of device/downlink.py).

    keygen(path)                       -> public key (base64 of 32 raw bytes: the devices' downlink.public_key)
    load_key(path)                     -> the Ed25519 private key (file must be mode 0600 or stricter)
    policy_command(file)               -> ("policy update", args), the policy checked by the device's own parser
    model_command(card, model)         -> ("model update", args), the model checked against the card's sha256
    sign(key, device, cmd, args, ttl)  -> the signed message for crowdcap/v1/<device>/cmd

The private key is PEM (PKCS#8, unencrypted) in a file only its owner can read. It is never printed,
logged or put in a status or an error message: errors name the file, never its content. What is
signed is checked first with the device's own code (policy parser, model card + hash), so a broken
update is refused here, not by every device.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from capture.configcore import InputError
from uplink.signed import COMMANDS, sign_command

MAX_TTL_S = 3600.0
_DEVICE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class FleetError(InputError):
    """A user-facing error (bad key file, bad update, bad device id)."""


def public_b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def fingerprint(key: Ed25519PrivateKey) -> str:
    """A short, public name of the key pair (sha256 of the public key): safe to log."""
    return hashlib.sha256(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def keygen(path: str | Path, *, force: bool = False) -> dict[str, str]:
    """A new key pair: the private key in `path` (0600, refused if it exists unless `force`), the public
    key in `path`.pub and returned (base64, for the devices' `downlink.public_key`)."""
    p = Path(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(p, flags, 0o600)
    except FileExistsError:
        raise FleetError(f"{p}: exists; refusing to overwrite a key (--force replaces it)") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    pub = public_b64(key)
    Path(f"{p}.pub").write_text(pub + "\n")
    return {"private_key": str(p), "public_key": pub, "public_key_file": f"{p}.pub", "fingerprint": fingerprint(key)}


def load_key(path: str | Path) -> Ed25519PrivateKey:
    p = Path(path)
    try:
        st = p.stat()
        data = p.read_bytes()
    except OSError as e:
        raise FleetError(f"{p}: cannot read the key file: {e.strerror or e}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FleetError(f"{p}: the private key is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                         f"run chmod 600 {p}")
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise FleetError(f"{p}: not an unencrypted PEM private key (make one with `crowdcap fleet keygen`)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FleetError(f"{p}: not an Ed25519 key")
    return key


def check_device(device: str) -> str:
    if not _DEVICE.match(device):
        raise FleetError(f"device id {device!r}: expected 1-64 of A-Z a-z 0-9 _ - .")
    return device


def policy_command(path: str | Path) -> tuple[str, dict[str, Any]]:
    from redact.policy import PolicyError, load_policy

    try:
        text = Path(path).read_text(encoding="utf-8")
        policy = load_policy(path)
    except (OSError, UnicodeDecodeError) as e:
        raise FleetError(f"{path}: cannot read the policy: {getattr(e, 'strerror', None) or e}") from None
    except PolicyError as e:
        raise FleetError(f"policy refused before signing: {e}") from None
    return "policy update", {"policy": text, "_version": policy.version}


def model_command(card_path: str | Path, model_path: str | Path) -> tuple[str, dict[str, Any]]:
    """The card (its `file` rewritten to the model's plain file name) and the model, hash-checked."""
    try:
        card_text = Path(card_path).read_text(encoding="utf-8")
        model = Path(model_path).read_bytes()
        raw = tomllib.loads(card_text)
    except OSError as e:
        raise FleetError(f"{e.filename}: cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FleetError(f"{card_path}: not a TOML model card ({e})") from None
    want = raw.get("sha256")
    got = hashlib.sha256(model).hexdigest()
    if want != got:
        raise FleetError(f"{model_path}: hashes to {got}, but the card's sha256 is {want!r}")
    name = Path(model_path).name
    if name.startswith("."):
        raise FleetError(f"{model_path}: the model's file name must not start with '.'")
    card_text = re.sub(r'(?m)^file\s*=\s*".*"\s*$', f'file = "{name}"', card_text, count=1)
    if tomllib.loads(card_text).get("file") != name:
        raise FleetError(f"{card_path}: file: expected a line file = \"...\" to point at the model")
    return "model update", {"card": card_text, "model": base64.b64encode(model).decode(),
                            "_version": f"{raw.get('name', '?')}@{raw.get('version', '?')}"}


def plain_command(cmd: str, args_json: str | None) -> tuple[str, dict[str, Any]]:
    if cmd not in COMMANDS:
        raise FleetError(f"command {cmd!r}: expected one of {', '.join(COMMANDS)}")
    try:
        args = json.loads(args_json) if args_json else {}
    except ValueError as e:
        raise FleetError(f"--args: not JSON ({e})") from None
    if not isinstance(args, dict):
        raise FleetError("--args: expected a JSON object")
    return cmd, args


def sign(key: Ed25519PrivateKey, device: str, cmd: str, args: dict[str, Any], *, ttl_s: float = 300.0,
         request_id: str = "") -> bytes:
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise FleetError(f"--ttl: expected 1-{MAX_TTL_S:.0f} seconds, got {ttl_s}")
    clean = {k: v for k, v in args.items() if not k.startswith("_")}
    return sign_command(key, check_device(device), cmd, clean, ttl_s=ttl_s, request_id=request_id)
