"""Hypothesis: random payloads on the command topic — raw bytes, random envelopes, and correctly signed
random command objects — never crash the downlink and always get a known reason."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_console_support import make_service, short_dir

from device.control import Controller
from device.downlink import Downlink

KEY = Ed25519PrivateKey.generate()
REASONS = {"malformed", "unsigned", "bad_signature", "wrong_device", "expired", "not_yet_valid", "expiry_too_far",
           "replayed", "unknown_command", "failed", "too_large"}

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                           max_leaves=12)


@pytest.fixture(scope="module")
def downlink():
    root = short_dir()
    pub = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    service = make_service(root, extra=f'\n[downlink]\npublic_key = "{pub}"\n')
    service.start()
    try:
        yield Downlink(service, Controller(service))
    finally:
        service.close()


def check(result: dict) -> None:
    assert isinstance(result, dict)
    if not result["ok"]:
        assert result["reason"] in REASONS, result


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=2000))
def test_random_bytes(downlink, raw):
    check(downlink.handle(raw))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.dictionaries(st.sampled_from(["payload", "sig", "x"]), json_values, max_size=3))
def test_random_envelopes(downlink, env):
    check(downlink.handle(json.dumps(env).encode()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cmd=st.sampled_from(["start", "stop", "config set", "policy update", "model update", "reboot", "", "x" * 300]),
       args=st.one_of(json_values, st.fixed_dictionaries({"key": st.sampled_from(["capture.fps", "device.id", "nope"]),
                                                          "value": json_values})),
       extra=st.dictionaries(st.sampled_from(["v", "device_id", "nonce", "issued_at", "expires_at", "args"]),
                             json_values, max_size=2))
def test_signed_random_commands(downlink, cmd, args, extra):
    now = time.time()
    body = {"v": 1, "device_id": "test-dev", "id": "f", "cmd": cmd, "args": args,
            "nonce": base64.b16encode(__import__("os").urandom(8)).decode(), "issued_at": now, "expires_at": now + 60}
    body.update(extra)
    payload = json.dumps(body).encode()
    raw = json.dumps({"payload": base64.b64encode(payload).decode(), "sig": base64.b64encode(KEY.sign(payload)).decode()})
    check(downlink.handle(raw.encode()))
    downlink.service.pipeline.resume()
    from device import config as config_mod

    config_mod.load(downlink.service.config_path)  # whatever was accepted, the config file still loads
