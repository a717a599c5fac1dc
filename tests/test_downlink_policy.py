"""Policy updates and privacy commands against the real redaction stage (CenterFace), from the console
layer and the signed downlink; the console `selftest` runs the model on the reference frames."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from test_console_support import make_service, short_dir

from device.control import Controller, Session
from device.downlink import Downlink, sign_command

POLICY = '''version = "field-7"
on_fault = "withhold"
[[rules]]
class = "face"
action = "fill"
margin = 0.4
applies_to = "both"
'''


@pytest.fixture(scope="module")
def rig():
    key = Ed25519PrivateKey.generate()
    pub = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    root = short_dir()
    service = make_service(root, stages="config", redact=True, extra=f'\n[downlink]\npublic_key = "{pub}"\n')
    service.start()
    controller = Controller(service)
    try:
        yield service, controller, Downlink(service, controller), key
    finally:
        service.close()


def test_policy_update_over_the_downlink_and_privacy_commands(rig):
    service, controller, dl, key = rig
    session = Session(origin="socket", authorized=True)
    before = controller.execute(["privacy"], session)
    assert before.ok and before.data["policy_file"] == "(built-in default)"
    r = dl.handle(sign_command(key, "test-dev", "policy update", {"policy": POLICY}))
    assert r["ok"] and r["result"]["policy_version"] == "field-7", r
    path = r["result"]["policy_file"]
    # the fleet layer (issue 12): the wearer's redact.policy is never replaced by the fleet
    assert service.config.redact.fleet_policy == path and service.config.redact.policy == ""
    assert service.stages["redact"].status()["policy_version"] == "field-7"
    assert controller.execute(["privacy", "show"], session).data["policy_version"] == "field-7"
    assert controller.execute(["privacy", "reload"], session).data["policy_version"] == "field-7"

    bad = POLICY.replace('action = "fill"', 'action = "sparkle"')
    r = dl.handle(sign_command(key, "test-dev", "policy update", {"policy": bad}))
    assert not r["ok"] and "policy refused, previous policy kept" in r["detail"] and "action" in r["detail"]
    assert service.stages["redact"].status()["policy_version"] == "field-7"
    from pathlib import Path

    assert Path(path).read_text() == POLICY  # the file on disk was put back too


def test_console_selftest_runs_the_model_on_reference_frames(rig):
    service, controller, _, _ = rig
    r = controller.execute(["selftest"], Session(origin="socket", authorized=True))
    model = r.data["checks"]["model"]
    assert model["result"] == "pass" and "reference faces found" in model["detail"], model
