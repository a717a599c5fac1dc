"""The ingest as a service: `crowdcap ingest --config FILE` validated with errors naming the key;
Prometheus /metrics and /healthz on a real running ingest."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import paho.mqtt.client as mqtt
from mqtt_broker import free_port, wait_for
from test_ingest_cli import _run
from uplink_helpers import IngestThread, make_frame, wait_for_frames

from uplink import messages, wire
from uplink.backend.metrics import serve_metrics


def _cfg(tmp_path, body: str):
    p = tmp_path / "ingest.toml"
    p.write_text(body)
    return str(p)


def test_config_errors_name_the_key(tmp_path) -> None:
    cases = {
        '[ingest]\nworkers = 0\n': "ingest.workers",
        '[ingest]\nbrokers = ["mqtt://a:1", "http://b:2"]\n': "ingest.brokers[1]",
        '[ingest]\nbrokers = ["mqtt://a:1", "nats://b:2"]\n': "ingest.brokers",
        '[ingest]\nqueu = 3\n': "ingest.queu: unknown key",
        '[ingest]\nregistry = "/nonexistent/devices.toml"\n': "ingest.registry",
        '[ingest]\ntls_cert = "x"\n': "ingest.tls_cert",
        '[ingset]\n': "ingset: unknown section",
        '[ingest\n': "not valid TOML",
    }
    for body, expected in cases.items():
        r = _run("--config", _cfg(tmp_path, body))
        assert r.returncode == 2 and expected in r.stderr and "Traceback" not in r.stderr, (body, r.stderr)


def test_bad_registry_names_file_and_key(tmp_path) -> None:
    reg = tmp_path / "devices.toml"
    reg.write_text('[devices."cam-1"]\ned25519 = "not base64!"\n')
    r = _run("--config", _cfg(tmp_path, f'[ingest]\nregistry = "{reg}"\nbrokers = ["mqtt://127.0.0.1:1"]\n'))
    assert r.returncode == 2 and "devices.cam-1.ed25519" in r.stderr and "Traceback" not in r.stderr


def test_config_file_runs_with_flags_overriding(tmp_path, broker) -> None:
    cfg = _cfg(tmp_path, f'[ingest]\nbrokers = ["mqtt://127.0.0.1:1"]\nout = "{tmp_path / "o"}"\nworkers = 1\n')
    r = _run("--config", cfg, "--broker", broker.url, "--idle-exit", "0.5")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["broker"] == broker.url


def test_metrics_and_health(tmp_path, broker) -> None:
    out = tmp_path / "out"
    ing = IngestThread(broker.url, out)
    port = free_port()
    server = serve_metrics(ing.ingest, "127.0.0.1", port)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    frame = wire.encode(messages.encode_frame(make_frame(1), messages.depth_codec("zstd"), 80))
    pub.publish("crowdcap/v1/dev1/frame", wire.single_chunk(frame), qos=1).wait_for_publish(5)
    pub.publish("crowdcap/v1/dev1/frame", b"garbage" * 10, qos=1).wait_for_publish(5)
    wait_for_frames(out, 1, 10)
    wait_for(lambda: ing.ingest.stats()["rejected_total"] == 1, 10, what="the reject counted")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            health = json.loads(r.read())
            code = r.status
    finally:
        server.shutdown()
        pub.disconnect()
        pub.loop_stop()
        ing.stop()
    assert "crowdcap_ingest_frames_total 1.0" in text
    assert 'crowdcap_ingest_rejected_total{reason="bad_magic"} 1.0' in text
    assert 'crowdcap_ingest_device_lag_seconds{device="dev1"}' in text
    assert "crowdcap_ingest_reassembly_buffers 0.0" in text and "crowdcap_ingest_confirms_sent_total" in text
    assert code == 200 and health["ok"] is True


def test_identity_prints_a_registry_entry(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-c", "import sys; from device.cli import main; sys.exit(main())",
                        "identity", "--state-dir", str(tmp_path / "st"), "--device-id", "cam-9"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["registry_entry"].startswith('[devices."cam-9"]') and (tmp_path / "st" / "device-key.pem").exists()
    from uplink.backend.registry import Registry

    reg = tmp_path / "devices.toml"
    reg.write_text(out["registry_entry"])
    assert Registry(reg).known("cam-9")


def test_sessions_logged_and_idle_ones_evicted_then_resumed(tmp_path, caplog) -> None:
    """20,000 devices must not mean 20,000 sessions in memory: idle sessions are finalised and dropped,
    and a device that speaks again resumes its session from disk (dedupe included)."""
    from uplink.backend.ingest import Ingest

    ing = Ingest("mqtt://127.0.0.1:1", tmp_path)
    frame = {d: wire.single_chunk(wire.encode(messages.encode_frame(make_frame(1, d), messages.depth_codec("zstd"),
                                                                     80))) for d in ("a1", "a2", "a3")}
    with caplog.at_level("INFO", logger="uplink.backend.ingest"):
        for d, p in frame.items():
            assert ing.handle(f"crowdcap/v1/{d}/frame", p) == "frame"
    assert sum("session a1/s1 opened" in r.getMessage() for r in caplog.records) == 1
    assert len(ing.sink.keys()) == 3
    assert sorted(ing.sink.evict_idle(idle=3600, max_sessions=1, min_quiet=0)) == [("a1", "s1"), ("a2", "s1")]
    assert ing.sink.keys() == [("a3", "s1")] and (tmp_path / "a1" / "s1" / "rgb.txt").exists()  # finalised
    assert ing.handle("crowdcap/v1/a1/frame", frame["a1"]) == "duplicate"  # reloaded from its folder
