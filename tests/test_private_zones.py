"""Private places: zone rules, and a real service whose camera is not read inside a pause zone — GPS
from an NMEA receiver over a real serial URL (loop://), Wi-Fi from a real file — with entry/exit in
status by name hash only, and the stricter side without a fix."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from test_console_support import short_dir, wait_for

from capture.nmea import GpsSource, NmeaReader, checksum
from capture.synthetic import SyntheticSource
from capture.wifi import parse_networks
from device.cli import main
from redact.private.common import PrivateError
from redact.private.zones import Context, ZoneStore, parse_zone

HOME = (48.1173, 11.5167)  # 4807.038 N, 01131.000 E


def gga(lat: float, lon: float) -> bytes:
    def dm(v: float, width: int) -> str:
        d = int(abs(v))
        return f"{d:0{width}d}{(abs(v) - d) * 60:07.4f}"
    body = f"GPGGA,123519,{dm(lat, 2)},{'N' if lat >= 0 else 'S'},{dm(lon, 3)},{'E' if lon >= 0 else 'W'},1,08,0.9,545.4,M,46.9,M,,"
    return f"${body}*{checksum(body):02X}\r\n".encode()


def test_zone_rules() -> None:
    circle = parse_zone("home", circle=(*HOME, 100.0))
    assert circle.inside(Context(fix=HOME)) is True
    assert circle.inside(Context(fix=(HOME[0] + 0.01, HOME[1]))) is False  # ~1.1 km north
    assert circle.inside(Context(fix=None)) is None  # cannot tell: the caller decides (strict = inside)
    square = parse_zone("office", polygon=["48.0,11.0", "48.0,12.0", "49.0,12.0", "49.0,11.0"])
    assert square.inside(Context(fix=HOME)) and not square.inside(Context(fix=(47.9, 11.5)))
    night = parse_zone("bedroom", wifi=["HomeNet"], time="22:00-07:00")
    late, noon = datetime(2026, 1, 1, 23, 30), datetime(2026, 1, 1, 12, 0)
    assert night.inside(Context(wifi={"HomeNet"}, now=late)) and not night.inside(Context(wifi={"HomeNet"}, now=noon))
    assert not night.inside(Context(wifi={"Cafe"}, now=late))
    bssid = parse_zone("flat", wifi=["AA:BB:CC:DD:EE:FF"])
    assert bssid.inside(Context(wifi=parse_networks("Other:aa\\:bb\\:cc\\:dd\\:ee\\:ff\n")))
    for bad in ({"circle": (91, 0, 10)}, {"circle": (0, 0, 0)}, {"polygon": ["1,1", "2,2"]}, {"time": "25:00-01:00"},
                {"action": "explode", "wifi": ["x"]}, {}):
        with pytest.raises(PrivateError):
            parse_zone("z", **bad)


def _service_with_gps(root: Path, extra: str = "") -> tuple:
    """A real service (real uplink stage, spool only) on a synthetic camera with a GPS on loop://."""
    from device import config as config_mod
    from device.runtime import Service

    cfg_path = root / "crowdcap.toml"
    cfg_path.write_text(f'[device]\nid = "test-dev"\nstate_dir = "{root / "state"}"\n\n'
                        f'[uplink]\nspool_dir = "{root / "spool"}"\n\n[redact]\nenabled = false\n\n'
                        f'[depth]\nenabled = false\n' + extra)
    source = GpsSource(SyntheticSource(64, 48, fps=30.0, pace="realtime", noise=False, cycle=2), NmeaReader("loop://"))
    return Service(config_mod.load(cfg_path), cfg_path, source=source), source


def test_pause_zone_by_gps_is_not_captured(capsys: pytest.CaptureFixture[str]) -> None:
    root = short_dir()
    state = root / "state"
    assert main(["privacy", "--state-dir", str(state), "add-zone", "home", "--circle", str(HOME[0]), str(HOME[1]),
                 "100"]) == 0
    capsys.readouterr()
    service, source = _service_with_gps(root)
    camera = source.source
    service.start()
    try:
        source.reader.port.write(gga(*HOME))  # at home
        gate = service.source
        wait_for(lambda: gate.tracker.entries, 5, "zone entry")
        before = camera._index
        wait_for(lambda: gate.counters["paused_checks"] > 10, 5, "paused checks")
        assert camera._index == before  # the camera is not read inside the zone
        source.reader.port.write(gga(HOME[0] + 0.02, HOME[1]))  # 2 km away
        wait_for(lambda: camera._index > before + 5, 5, "capture resumes outside")
        zones = service.status()["zones"]
        h = ZoneStore(state).list()[0]["name_hash"]
        assert zones["entries"] == {h: 1} and zones["exits"] == {h: 1} and zones["gaps"] == 1
        from uplink import wire

        uplink = service.stages["uplink"]
        events = []
        for rid in uplink.spool.pending_after(0, 10000):
            got = uplink.spool.read(rid)
            assert got is not None
            uplink.spool.release(rid)
            if got[1].kind == wire.EVENT:
                events.append(wire.decode(got[0]).meta())
        assert [e["type"] for e in events] == ["zone_gap"] and events[0]["zone"] == h and events[0]["seconds"] > 0
        text = json.dumps(service.status())
        assert "48.11" not in text and "11.51" not in text and '"home"' not in text  # never coordinates or names
    finally:
        service.close()


def test_no_fix_is_the_stricter_side_unless_configured(tmp_path: Path) -> None:
    for no_fix, paused in (("strict", True), ("ignore", False)):
        root = short_dir()
        ZoneStore(root / "state").add(parse_zone("home", circle=(*HOME, 100.0)))
        service, source = _service_with_gps(root, extra=f'\n[privacy]\nzone_no_fix = "{no_fix}"\n')
        service.start()
        try:
            gate = service.source
            if paused:
                wait_for(lambda gate=gate: gate.counters["paused_checks"] > 10, 5, "paused without a fix")
                assert source.source._index == 0 and gate.tracker.no_fix_decisions > 0
            else:
                wait_for(lambda source=source: source.source._index > 5, 5, "capture without a fix")
        finally:
            service.close()


def test_wifi_zone_from_a_file() -> None:
    root = short_dir()
    seen = root / "wifi.txt"
    seen.write_text("HomeNet:12\\:34\\:56\\:78\\:9A\\:BC\nNeighbour:aa\\:aa\\:aa\\:aa\\:aa\\:aa\n")
    ZoneStore(root / "state").add(parse_zone("home", wifi=["12:34:56:78:9a:bc"]))
    service, source = _service_with_gps(root, extra=f'\n[privacy]\nwifi_file = "{seen}"\n')
    service.start()
    try:
        gate = service.source
        wait_for(lambda: gate.counters["paused_checks"] > 5, 5, "paused by Wi-Fi")
        assert source.source._index == 0
        seen.write_text("Cafe:01\\:02\\:03\\:04\\:05\\:06\n")
        wait_for(lambda: source.source._index > 5, 5, "capture after leaving")
    finally:
        service.close()


def test_console_marks_a_volume_in_front_of_the_wearer_and_lists_it() -> None:
    """`privacy mark-volume` on a running service with real redaction: anchored on the next frame, then
    every later frame redacts it; `privacy list` / `privacy` show it by name and name hash."""
    from device import config as config_mod
    from device.control import Controller, Session
    from device.runtime import Service

    root = short_dir()
    cfg_path = root / "crowdcap.toml"
    cfg_path.write_text(f'[device]\nid = "test-dev"\nstate_dir = "{root / "state"}"\n\n'
                        f'[uplink]\nspool_dir = "{root / "spool"}"\n\n[depth]\nenabled = false\n')
    source = SyntheticSource(320, 240, fps=15.0, pace="realtime", noise=False)
    service = Service(config_mod.load(cfg_path), cfg_path, source=source)
    ctl = Controller(service)
    trusted = Session(origin="control", authorized=True)
    service.start()
    try:
        assert not ctl.execute(["privacy", "mark-volume", "desk", "--box", "1", "x", "1"], trusted).ok
        reply = ctl.execute(["privacy", "mark-volume", "desk", "--box", "0.8", "0.8", "0.8", "--at", "2"], trusted)
        assert reply.ok, reply.data
        h = reply.data["marked"]["name_hash"]
        stage = service.stages["redact"]
        wait_for(lambda: stage.status()["private"]["matches"].get(h, 0) >= 3, 20, "volume redacted in later frames")
        listed = ctl.execute(["privacy", "list"], trusted)
        assert [v["name"] for v in listed.data["volumes"]] == ["desk"] and listed.data["volumes"][0]["name_hash"] == h
        shown = ctl.execute(["privacy"], trusted)
        assert shown.ok and shown.data["wearer"]["volumes"][0]["name_hash"] == h
        assert ctl.execute(["privacy", "remove", "desk"], trusted).ok
        assert ctl.execute(["privacy", "list"], trusted).data["volumes"] == []
    finally:
        service.close()


def test_wrapped_sources_pass_offline_through() -> None:
    # a GPS-tagged replay at pace fast must still get backpressure, not drops (device/pipeline.py)
    from capture.wrapped import WrappedSource

    class Replay(WrappedSource):
        offline = True

        def __init__(self) -> None:
            pass

    assert GpsSource(Replay(), NmeaReader("loop://")).offline is True
    assert GpsSource(SyntheticSource(64, 48, fps=30.0, pace="realtime", noise=False), NmeaReader("loop://")).offline is False
