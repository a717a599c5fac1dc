"""Who may speak: signed frames from registered devices are stored; forged, unsigned and unknown-device
messages are refused and counted — and a forger who publishes first never turns the real frames into
"duplicates" (issue 16). Also: deep JSON, partial caps and expiry are bounded and counted."""

from __future__ import annotations

import os

import paho.mqtt.client as mqtt
import pytest
from uplink_helpers import IngestThread, make_frame, uplink_cfg, wait_for_frames

from uplink import build_stage, messages, wire
from uplink.backend.ingest import Ingest
from uplink.backend.reassembly import Reassembler
from uplink.identity import DeviceKey, link_warnings, registry_entry


def _registry(tmp_path, **keys: DeviceKey):
    path = tmp_path / "devices.toml"
    path.write_text("".join(registry_entry(dev, k) for dev, k in keys.items()))
    return path


def _msg(seq: int, session: str = "s1", device: str = "dev1") -> bytes:
    return wire.encode(messages.encode_frame(make_frame(seq, device, session), messages.depth_codec("zstd"), 80))


def test_forger_publishing_first_does_not_make_real_frames_duplicates(tmp_path, broker) -> None:
    key = DeviceKey.load_or_create(tmp_path / "state")
    forger_key = DeviceKey.load_or_create(tmp_path / "forger")
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out, registry=str(_registry(tmp_path, dev1=key)))
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    n = 25
    t = "crowdcap/v1/dev1/frame"
    for seq in range(n):  # the session id is public (retained status): forge every frame of it first
        mid = os.urandom(8) + seq.to_bytes(8, "big")
        forged = _msg(seq)
        how = seq % 3
        if how == 0:
            payloads = wire.chunks(forged, mid, 4096)  # unsigned
        elif how == 1:
            payloads = wire.chunks(forged, mid, 4096, forger_key.sign)  # signed by someone else
        else:  # a real signature, replayed under another message id (would confirm the wrong record)
            sig = key.sign(wire.signed_bytes(mid, forged))
            payloads = [wire.chunks(forged, os.urandom(16), 1 << 20, lambda _d, s=sig: s)[0]]
        for p in payloads:
            pub.publish(t, p, qos=1).wait_for_publish(5)
    for p in (wire.single_chunk(_msg(0, device="ghost")),):  # an unknown device
        pub.publish("crowdcap/v1/ghost/frame", p, qos=1).wait_for_publish(5)
    stage = build_stage(uplink_cfg(tmp_path, broker.url, max_payload=4096), "dev1", "s1", signer=key.sign)
    stage.start()
    for seq in range(n):
        stage.apply(make_frame(seq))
    assert stage.drain(30)
    seqs = wait_for_frames(out, n, 30)
    stage.close()
    pub.disconnect()
    pub.loop_stop()
    stats = ing.stop()
    assert sorted(seqs) == list(range(n))  # every real frame, once
    assert stats.get("duplicate", 0) == 0
    rej = stats["rejected"]
    assert rej.get("unsigned") == 9 and rej.get("bad_signature") == 16 and rej.get("unknown_device") == 1
    assert not (out / "ghost").exists()


def test_signature_covers_header_and_message_id(tmp_path) -> None:
    key = DeviceKey.load_or_create(tmp_path / "state")
    assert DeviceKey.load_or_create(tmp_path / "state").public_b64 == key.public_b64  # made once, kept
    assert oct((tmp_path / "state" / "device-key.pem").stat().st_mode & 0o777) == "0o600"
    ing = Ingest("mqtt://127.0.0.1:1", tmp_path / "out", registry=str(_registry(tmp_path, dev1=key)))
    good = _msg(3)
    mid = os.urandom(16)
    tampered = bytearray(good)
    tampered[15] ^= 1  # seq
    payload = wire.chunks(bytes(tampered), mid, 1 << 20, key.sign)[0]
    sig = payload[-64:]
    forged = wire.chunks(good, mid, 1 << 20, lambda _d: sig)[0]  # signature of the tampered header
    assert ing.handle("crowdcap/v1/dev1/frame", forged) == "rejected"
    signed = wire.chunks(good, mid, 1 << 20, key.sign)[0]
    historical = wire.set_chunk0_flags(signed, wire.FLAG_HISTORICAL)  # set at send time: still valid
    assert ing.handle("crowdcap/v1/dev1/frame", historical) == "frame"
    assert ing.stats()["rejected"] == {"bad_signature": 1}


def test_deep_json_is_bad_input_not_a_traceback(tmp_path, caplog) -> None:
    ing = Ingest("mqtt://127.0.0.1:1", tmp_path)
    deep = messages.encode_json("event", "dev1", "s1", 1, 1.0, {})
    deep.sections[wire.SEC_META] = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    frame = messages.encode_frame(make_frame(1), messages.depth_codec("zstd"), 80)
    frame.sections[wire.SEC_MANIFEST] = b"[" * 50 + b"]" * 50
    with caplog.at_level("WARNING"):
        assert ing.handle("crowdcap/v1/dev1/event", wire.single_chunk(wire.encode(deep))) == "rejected"
        assert ing.handle("crowdcap/v1/dev1/frame", wire.single_chunk(wire.encode(frame))) == "rejected"
    assert ing.stats()["rejected"] == {"json_too_deep": 2}
    assert not any(r.exc_info for r in caplog.records)


def test_partials_capped_per_device_and_overall_and_expired_with_their_files(tmp_path) -> None:
    r = Reassembler(tmp_path / "p", timeout=3600, max_bytes=5_000, max_partials=6, device_max_bytes=12_000,
                    device_max_partials=4)

    def chunk(i: int) -> wire.Chunk:
        return wire.parse_chunk(wire.chunks(b"x" * 3000, i.to_bytes(16, "big"), 1036)[0])

    for i in range(4):
        r.add("a", chunk(i))  # 4 partials of 1000 bytes
    with pytest.raises(wire.WireError, match="partial_cap_device"):
        r.add("a", chunk(99))  # a 5th from the same device is refused
    for i in range(4):
        r.add(f"b{i}", chunk(100 + i))  # other devices still get in; the oldest partials make room
    assert r.partials() <= 6 and r.stats()["partial_bytes"] <= 5_000
    assert r.counters["partial_cap_device"] == 1 and r.counters["partial_over_budget"] >= 3
    # a declared size beyond the device's budget is refused before anything is written
    big = wire.parse_chunk(wire.chunks(b"x" * 20_000, bytes(16), 1036)[0])
    with pytest.raises(wire.WireError, match="partial_cap_device"):
        r.add("c", big)
    assert len([p for p in (tmp_path / "p").iterdir() if not p.name.startswith(".")]) == r.partials()
    r.timeout = 0.0
    held = r.partials()
    assert r.expire() == held and r.counters["partial_expired"] == held
    assert r.partials() == 0 and not [p for p in (tmp_path / "p").iterdir() if not p.name.startswith(".")]


def test_device_warns_about_anonymous_plain_mqtt_to_a_remote_host() -> None:
    assert link_warnings("mqtt://127.0.0.1:1883") == [] and link_warnings("mqtts://broker.example:8883") == []
    w = link_warnings("mqtt://10.0.0.5:1883")
    assert len(w) == 2 and "mqtts://" in w[0] and "anonymous" in w[1]
    assert len(link_warnings("mqtt://10.0.0.5:1883", username="cam")) == 1
