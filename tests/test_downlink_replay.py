"""The downlink replay cache fails closed (issue 16): after `downlink-nonces.json` is corrupted or
deleted, a recorded command is refused (its issue time is at or before the durable high-water mark),
across restarts, while newly signed commands are accepted."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from test_console_support import make_service, short_dir

from device.control import Controller
from device.downlink import Downlink, sign_command


@pytest.fixture()
def rig():
    key = Ed25519PrivateKey.generate()
    pub = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    service = make_service(short_dir(), extra=f'\n[downlink]\npublic_key = "{pub}"\n')
    return service, key


def restart(service) -> Downlink:
    return Downlink(service, Controller(service))


def fps(key, value: float, now: float | None = None) -> bytes:
    return sign_command(key, "test-dev", "config set", {"key": "capture.fps", "value": value}, now=now)


@pytest.mark.parametrize("damage", ["corrupt", "delete", "truncate"])
def test_a_damaged_cache_does_not_reopen_replays(rig, damage: str) -> None:
    service, key = rig
    dl = restart(service)
    recorded = fps(key, 12.0, now=time.time() - 5)  # what an attacker captured off the broker
    assert dl.handle(recorded)["ok"]
    assert dl.handle(recorded)["reason"] == "replayed"
    cache = Path(service.config.device.state_dir) / "downlink-nonces.json"
    assert cache.with_name("downlink-nonces.json.highwater").exists()
    if damage == "corrupt":
        cache.write_bytes(b"\x00garbage{" * 10)
    elif damage == "truncate":
        cache.write_text("")
    else:
        cache.unlink()

    dl = restart(service)
    r = dl.handle(recorded)
    assert not r["ok"] and r["reason"] == "replay_unknown" and "re-sign" in r["detail"], r
    assert dl.status()["replay_refusing"]["until"] >= time.time()
    assert dl.handle(fps(key, 14.0))["ok"]  # the backend's newly signed command is accepted
    assert service.config.capture.fps == 14.0

    dl = restart(service)  # the cache now looks healthy again: the refusal window must survive that
    assert dl.handle(recorded)["reason"] == "replay_unknown"
    assert service.config.capture.fps == 14.0


def test_a_corrupt_high_water_mark_refuses_everything_issued_before_the_start(rig) -> None:
    service, key = rig
    dl = restart(service)
    recorded = fps(key, 12.0, now=time.time() - 5)
    assert dl.handle(recorded)["ok"]
    state = Path(service.config.device.state_dir)
    (state / "downlink-nonces.json").unlink()
    (state / "downlink-nonces.json.highwater").write_text("{not json")
    dl = restart(service)
    assert dl.handle(recorded)["reason"] == "replay_unknown"
    assert dl.handle(fps(key, 9.0, now=time.time() - 2))["reason"] == "replay_unknown"  # before this start
    assert dl.handle(fps(key, 16.0, now=time.time() + 1))["ok"]
    mark = json.loads((state / "downlink-nonces.json.highwater").read_text())
    assert mark["refuse_until"] > time.time()


def test_a_fresh_device_accepts_commands(rig) -> None:
    service, key = rig
    assert restart(service).handle(fps(key, 11.0, now=time.time() - 60))["ok"]
