"""crowdcap on a real clustered broker: a 3-node NATS JetStream cluster with MQTT (Debian's nats-server).
Devices speak MQTT 3.1.1 to any node and list every node; ingest workers share one durable JetStream
consumer (uplink/backend/nats_link.py). The node the device is connected to is SIGKILLed mid-stream:
every frame lands exactly once."""

from __future__ import annotations

from collections import Counter

import pytest
from nats_cluster import NatsCluster
from uplink_helpers import Feeder, IngestThread, committed_seqs, uplink_cfg, wait_for_frames

from uplink import build_stage
from uplink.identity import DeviceKey, registry_entry

pytestmark = pytest.mark.slow


def test_two_nats_native_workers_split_the_stream_exactly_once(tmp_path) -> None:
    """Scale-out on NATS: two ingest workers share one durable JetStream consumer (NATS has no MQTT 5
    shared subscriptions); a node dies mid-stream; every frame lands once and both workers worked."""
    key = DeviceKey.load_or_create(tmp_path / "state")
    reg = tmp_path / "devices.toml"
    reg.write_text(registry_entry("dev1", key))
    with NatsCluster() as cluster:
        nats_urls = [f"nats://127.0.0.1:{p['client']}" for p in cluster.ports]
        out = tmp_path / "out"
        workers = [IngestThread(nats_urls, out, registry=str(reg), client_id=f"w{i}") for i in range(2)]
        stage = build_stage(uplink_cfg(tmp_path, cluster.url_list, confirm_timeout=2.0), "dev1", "s1",
                            signer=key.sign)
        stage.start()
        n = 120
        feed = Feeder(stage, n, fps=40)
        wait_for_frames(out, 30, 60)  # streaming through the cluster, then the device's node dies
        node = stage.status()["sender"]["broker_node"]
        cluster.kill(cluster.node_of_port(int(node.rsplit(":", 1)[1])))
        feed.join()
        assert stage.drain(90), stage.undelivered()
        stats = [w.stop() for w in workers]
        stage.close()
    seqs = committed_seqs(out)
    dups = [s for s, c in Counter(seqs).items() if c > 1]
    missing = sorted(set(range(n)) - set(seqs))
    assert not dups and not missing, f"duplicates {dups[:10]}, missing {missing[:10]} of {n}"
    assert all(s.get("frame", 0) + s.get("chunks_buffered", 0) > 0 for s in stats)
    assert sum(s["rejected_total"] for s in stats) == 0
