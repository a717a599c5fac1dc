"""Checks `crowdcap config check` runs (registered in device/configcheck.py) beyond the TOML schema: everything the service would trip on
at start, or that would silently not work, each problem naming the key and the file.

* redaction: every model card parses, its model file hashes to the card's sha256 and the model finds
  the known faces of the reference frames (`redact.proof`); the policy layers load and respect the
  privacy floor;
* console.pin_hash is a real scrypt hash (a plaintext PIN there locks everyone out);
* uplink TLS files are PEM of the right kind (CA/cert: certificates; key: an unencrypted private key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from device.console.auth import check_hash


def models(rcfg: Any) -> list[str]:
    from capture.config import ConfigError
    from redact.cards import default_card_path, load_card, read_verified
    from redact.detector import Detector
    from redact.proof import prove
    from redact.runtime import ModelLoadError

    out = []
    cards = rcfg.models or [str(default_card_path())]
    for i, path in enumerate(cards):
        key = f"redact.models[{i}]" if rcfg.models else "redact.models (built-in card)"
        if not Path(path).is_file():
            continue  # reported by missing_files
        try:
            card = load_card(path)
            read_verified(card)
            det = Detector(card, threads=1)
        except (ConfigError, ModelLoadError) as e:
            out.append(f"{key}: {e}")
            continue
        proof = prove(det)
        if not proof["ok"]:
            out.append(f"{key}: {proof['detail']}")
    return out


def policy(rcfg: Any) -> list[str]:
    from capture.config import ConfigError
    from redact.layers import PolicyLayers

    for key in ("policy", "fleet_policy"):
        value = getattr(rcfg, key, "")
        if value and not Path(value).is_file():
            return []  # reported by missing_files
    try:
        PolicyLayers.from_config(rcfg).load()
    except ConfigError as e:
        return [f"redact.policy: {e}"]
    return []


def pin_hash(stored: str) -> list[str]:
    if not stored:
        return []
    try:
        check_hash(stored)
    except ValueError as e:
        return [f"{e} (a plaintext PIN here locks every login out; make one with `crowdcap console hash-pin`)"]
    return []


def pem(ucfg: Any) -> list[str]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    out = []
    for key in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(ucfg, key, "")
        if not path or not Path(path).is_file():
            continue  # empty, or reported by missing_files
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            out.append(f"uplink.{key}: {path}: cannot read ({e.strerror})")
            continue
        try:
            if key == "tls_key":
                load_pem_private_key(data, password=None)
            elif not x509.load_pem_x509_certificates(data):
                raise ValueError("no certificate")
        except TypeError:
            out.append(f"uplink.{key}: {path}: the private key is encrypted; the service cannot use it unattended")
        except ValueError:
            what = "an unencrypted PEM private key" if key == "tls_key" else "a PEM certificate"
            out.append(f"uplink.{key}: {path}: not {what}")
    return out
