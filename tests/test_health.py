"""Health sampling from real sysfs-layout files and a real vcgencmd-like program; thermal rate limiting
on a running pipeline; telemetry and retained status through the real uplink stage to mosquitto."""

from __future__ import annotations

import stat
import time

import pytest
from test_console_support import decode_json_message, make_service, short_dir, wait_for

from device.health import HealthReporter, HealthSampler, ThermalGovernor, read_temperature, read_throttled


def thermal_tree(root, zones):
    for i, (kind, millideg) in enumerate(zones):
        z = root / f"thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(f"{millideg}\n")
    return root


def test_temperature_prefers_the_cpu_zone(tmp_path):
    assert read_temperature(thermal_tree(tmp_path / "a", [("acpitz", 40000), ("cpu-thermal", 61500)])) == 61.5
    assert read_temperature(thermal_tree(tmp_path / "b", [("x", 40000), ("y", 52000)])) == 52.0
    assert read_temperature(tmp_path / "none") is None
    bad = thermal_tree(tmp_path / "c", [("cpu-thermal", 1)])
    (bad / "thermal_zone0" / "temp").write_text("garbage")
    assert read_temperature(bad) is None


def test_vcgencmd_flags(tmp_path):
    exe = tmp_path / "vcgencmd"
    exe.write_text("#!/bin/sh\necho throttled=0x50005\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    flags = read_throttled(str(exe))
    assert flags["under_voltage"] and flags["throttled"] and not flags["freq_capped"]
    assert flags["under_voltage_since_boot"] and flags["throttled_since_boot"] and flags["raw"] == "0x50005"
    exe.write_text("#!/bin/sh\necho nonsense\n")
    assert read_throttled(str(exe)) is None
    sample = HealthSampler([str(tmp_path)], thermal_root=tmp_path, vcgencmd=None).sample()
    assert sample["memory"]["total_mb"] > 0 and sample["disk"][str(tmp_path)]["free_mb"] > 0
    assert sample["cpu"]["cores"] >= 1


def test_governor_caps_gradually_with_hysteresis():
    g = ThermalGovernor(70.0, 80.0, 5.0)
    assert g.advise(60, 30)["rate_limit_fps"] is None
    warm = g.advise(75, 30)
    assert warm["state"] == "warm" and 5 < warm["rate_limit_fps"] < 30 and "75.0 °C" in warm["reason"]
    assert g.advise(85, 30) == {"state": "hot", "rate_limit_fps": 5.0, "reason": "SoC at 85.0 °C (soft limit 70 °C)"}
    assert g.advise(68.5, 30)["rate_limit_fps"] == 5.0  # cooling, inside the hysteresis band: keep the cap
    assert g.advise(66, 30)["rate_limit_fps"] is None
    assert g.advise(50, 30, {"throttled": True})["rate_limit_fps"] == 15  # firmware throttling: halve


def test_hot_device_lowers_the_capture_rate_and_says_so(tmp_path):
    root = short_dir()
    service = make_service(root)
    from capture.synthetic import SyntheticSource

    service.source = SyntheticSource(64, 48, pace="fast", noise=False, cycle=2)
    service.pipeline.source = service.source
    zones = thermal_tree(tmp_path / "thermal", [("cpu-thermal", 50000)])
    sampler = HealthSampler([str(root)], thermal_root=zones)
    now = [0.0]
    reporter = HealthReporter(service, sampler=sampler, clock=lambda: now[0])
    service.start()
    try:
        reporter(service)
        assert reporter.last["thermal"]["state"] == "ok"
        (zones / "thermal_zone0" / "temp").write_text("90000\n")
        now[0] += 60
        reporter(service)
        assert reporter.last["thermal"] == {"state": "hot", "rate_limit_fps": 5.0,
                                            "reason": "SoC at 90.0 °C (soft limit 70 °C)"}
        n0, t0 = service.pipeline.capture.frames_in, time.monotonic()
        wait_for(lambda: time.monotonic() - t0 > 1.0, what="a second of capture")
        rate = (service.pipeline.capture.frames_in - n0) / (time.monotonic() - t0)
        assert rate < 8, rate  # capped at 5 fps (the fast source would give hundreds)
        from device.console.render import summary_line

        st = service.status()
        st["health"] = reporter.last
        assert "HOT: capture capped at 5 fps" in summary_line(st)
        (zones / "thermal_zone0" / "temp").write_text("40000\n")
        now[0] += 60
        reporter(service)
        assert reporter.last["thermal"]["rate_limit_fps"] is None
        wait_for(lambda: service.pipeline.capture.frames_in > n0 + 100, 10, "rate restored")
    finally:
        service.close()


@pytest.mark.slow
def test_telemetry_and_retained_status_reach_the_broker(broker):
    import paho.mqtt.client as mqtt

    root = short_dir()
    service = make_service(root, stages="config", broker=broker.url, extra="\n[health]\ntelemetry_period = 0.5\n")
    got: dict[str, list] = {"telemetry": [], "status": []}

    def on_message(client, userdata, m):
        kind = m.topic.rsplit("/", 1)[-1]
        if kind in got:
            got[kind].append((m.retain, decode_json_message(m.payload)[1]))

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"crowdcap/v1/{service.device_id}/#", qos=1)
    sub.loop_start()
    reporter = HealthReporter(service)
    service.housekeeping.append(reporter)
    service.start()
    try:
        service.wait(until=time.monotonic() + 1.5)
        wait_for(lambda: got["telemetry"] and any(p.get("summary") for _, p in got["status"]), 15,
                 "telemetry + status")
    finally:
        service.close()
        sub.loop_stop()
        sub.disconnect()
    _, tele = got["telemetry"][-1]
    assert tele["device_id"] == "test-dev" and tele["pipeline"]["frames_captured"] > 0
    assert tele["health"]["memory"]["total_mb"] > 0 and "thermal" in tele["health"]
    assert "spool" in tele["uplink"]
    online = [p for _, p in got["status"] if p.get("summary")]
    assert online[-1]["state"] == "online" and "fps" in online[-1]["summary"]
    assert reporter.published >= 1 and reporter.publish_errors == 0
