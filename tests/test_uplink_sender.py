"""Sender PUBACK handling: a throttled publish is retried (record kept), a refused one is dropped and counted."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from uplink_helpers import uplink_cfg

from uplink import wire
from uplink.sender import Sender
from uplink.spool import PRIO_FRAME, Spool


def _sender_with_one_record_in_flight(tmp_path) -> tuple[Sender, Spool, int]:
    cfg = uplink_cfg(tmp_path, "mqtt://127.0.0.1:1")
    spool = Spool(cfg.spool_dir, quota_bytes=10**7, fsync="off")
    rid = spool.append(b"x" * 100, PRIO_FRAME, wire.FRAME)
    sender = Sender(cfg, "dev1", spool, will_payload=b"")
    sender._connected = True
    out = sender._next_outgoing()  # reads the record (in flight) and chunks it, as _fill_window does
    assert out is not None and out.rid == rid
    out.next_index = 1
    out.unacked.add(0)
    sender._mids[7] = (rid, 0)
    return sender, spool, rid


def test_quota_exceeded_puback_keeps_the_record(tmp_path) -> None:
    """Managed brokers answer a QoS 1 publish with "Quota exceeded" when throttling: that is "later",
    not "never" — the record used to be dropped (lost) like a permanently refused one."""
    sender, spool, rid = _sender_with_one_record_in_flight(tmp_path)
    sender._on_publish(None, None, 7, ReasonCode(PacketTypes.PUBACK, "Quota exceeded"), None)
    assert len(spool) == 1 and spool.record(rid) is not None
    assert not sender.connected and sender.counters["broker_busy_Quota_exceeded"] == 1
    sender._teardown()  # what the sender thread does next: the record becomes pending again
    assert spool.pending_after(0, 10) == [rid]
    sender.stop()
    spool.close()


def test_not_authorized_puback_drops_and_counts(tmp_path) -> None:
    sender, spool, rid = _sender_with_one_record_in_flight(tmp_path)
    sender._on_publish(None, None, 7, ReasonCode(PacketTypes.PUBACK, "Not authorized"), None)
    assert len(spool) == 0 and sender.connected
    assert spool.stats()["evictions"] == {"broker_refused_frame_Not_authorized": 1}
    sender.stop()
    spool.close()


def test_unparsable_ca_file_is_a_reported_retry_not_a_dead_sender(tmp_path) -> None:
    """A CA file that exists (config check passes) but does not parse made paho's tls_set raise in
    the sender thread, which died: nothing was sent again and status showed no error."""
    import time

    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    cfg = uplink_cfg(tmp_path, "mqtts://127.0.0.1:1", tls_ca=str(ca))
    spool = Spool(cfg.spool_dir, quota_bytes=10**7, fsync="off")
    sender = Sender(cfg, "dev1", spool, will_payload=b"")
    sender.start()
    deadline = time.monotonic() + 10
    while sender.counters["connect_errors"] < 2:
        assert time.monotonic() < deadline, "no connect attempt reported"
        time.sleep(0.02)
    assert sender._thread is not None and sender._thread.is_alive()
    assert "SSLError" in sender.stats()["last_error"]
    sender.stop()
    spool.close()


def test_refused_ack_subscription_is_retried(tmp_path) -> None:
    """NATS answers SUBACK 0x80 while the JetStream streams behind its MQTT sessions elect a new
    leader (the device's node was killed, it reconnected to another): the refused ack subscription
    used to go unnoticed, and no confirmation ever arrived on that connection."""
    import time

    class Client:
        def __init__(self) -> None:
            self.subs: list[tuple[str, int]] = []

        def subscribe(self, name: str, qos: int) -> tuple[int, int]:
            self.subs.append((name, qos))
            return 0, 40 + len(self.subs)

    cfg = uplink_cfg(tmp_path, "mqtt://127.0.0.1:1")
    spool = Spool(cfg.spool_dir, quota_bytes=10**7, fsync="off")
    sender = Sender(cfg, "dev1", spool, will_payload=b"")
    sender._client = client = Client()
    sender._subscribe("crowdcap/v1/dev1/ack")
    sender._on_subscribe(None, None, 41, [ReasonCode(PacketTypes.SUBACK, identifier=0x80)], None)
    assert sender.counters["subscribe_refused"] == 1 and "crowdcap/v1/dev1/ack" in sender._resub
    sender._resub["crowdcap/v1/dev1/ack"] = time.monotonic()  # due now
    sender._resubscribe_due()
    assert client.subs == [("crowdcap/v1/dev1/ack", 1)] * 2 and not sender._resub
    sender._on_subscribe(None, None, 42, [ReasonCode(PacketTypes.SUBACK, identifier=1)], None)
    assert not sender._resub and not sender._subs and sender.counters["subscribe_refused"] == 1
    sender._client = None
    sender.stop()
    spool.close()
