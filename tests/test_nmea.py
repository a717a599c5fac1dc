"""NMEA parsing (GGA/RMC, checksums), the serial reader over loop:// and a pty, hot-plug, random bytes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.frame import Intrinsics, RGBDFrame
from capture.nmea import NmeaError, NmeaParser, NmeaReader, checksum, parse_sentence

GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"


def sentence(body: str) -> str:
    return f"${body}*{checksum(body):02X}"


def test_gga_and_rmc_reference_sentences() -> None:
    gga = parse_sentence(GGA)
    assert gga is not None and gga.kind == "GGA" and gga.valid
    assert gga.lat == pytest.approx(48 + 7.038 / 60) and gga.lon == pytest.approx(11 + 31.0 / 60)
    assert (gga.quality, gga.satellites, gga.hdop, gga.alt_m, gga.utc) == (1, 8, 0.9, 545.4, "123519")
    rmc = parse_sentence(RMC)
    assert rmc is not None and rmc.kind == "RMC" and rmc.valid and rmc.date == "230394"
    assert rmc.speed_mps == pytest.approx(22.4 * 0.514444) and rmc.course_deg == 84.4


def test_southern_western_multi_constellation_and_no_fix() -> None:
    fix = parse_sentence(sentence("GNGGA,000001.00,3352.1280,S,15112.5830,W,2,12,0.6,12.0,M,0.0,M,,"))
    assert fix is not None and fix.lat == pytest.approx(-(33 + 52.128 / 60)) and fix.lon < -151
    nofix = parse_sentence(sentence("GPGGA,,,,,,0,00,99.99,,,,,,"))
    assert nofix is not None and not nofix.valid and nofix.lat is None
    void = parse_sentence(sentence("GPRMC,083559.00,V,,,,,,,091202,,,N"))
    assert void is not None and not void.valid and void.lat is None
    assert parse_sentence(sentence("GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00")) is None


@pytest.mark.parametrize("line,reason", [
    (GGA[:-2] + "48", "bad_checksum"),
    (GGA.replace("4807.038", "4807.039"), "bad_checksum"),
    (GGA.split("*")[0], "no_checksum"),
    (sentence("GPGGA,123519,9107.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), "bad_position"),
    (sentence("GPGGA,123519,4867.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), "bad_position"),
    (sentence("GPGGA,123519,4807.038,X,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), "bad_position"),
    (sentence("GPGGA,993519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), "bad_time"),
    (sentence("GPGGA,123519,4807.038,N,01131.000,E,1,08,nan,545.4,M,46.9,M,,"), "bad_hdop"),
    (sentence("GPGGA,123519,4807.038,N"), "short_sentence"),
    (sentence("GPRMC,123519,Q,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"), "bad_status"),
    ("GPGGA,1*00", "malformed"),
    ("$" + "A" * 200 + "*00", "malformed"),
])
def test_bad_sentences_are_refused_with_a_reason(line: str, reason: str) -> None:
    with pytest.raises(NmeaError) as e:
        parse_sentence(line)
    assert e.value.reason == reason


def test_stream_split_anywhere_noise_resync_and_counts() -> None:
    stream = (b"\xb5b\x01\x07garbage" + GGA.encode() + b"\r\n" + RMC[:-2].encode() + b"00\r\n"
              + b"$GPGSV,1*00\r\n" + RMC.encode() + b"\r\n")
    for cut in range(0, len(stream), 7):  # however the bytes arrive, the result is the same
        parser = NmeaParser()
        fixes = parser.feed(stream[:cut], 1) + parser.feed(stream[cut:], 2)
        assert [f.kind for f in fixes] == ["GGA", "RMC"]
        assert parser.counts["bad_checksum"] == 2 and parser.counts["noise"] == 1 and parser.bad == 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_random_bytes_never_crash_and_buffer_stays_bounded(chunks: list[bytes]) -> None:
    parser = NmeaParser()
    for chunk in chunks:
        for fix in parser.feed(chunk):
            assert fix.lat is None or -90 <= fix.lat <= 90
    assert len(parser._buffer) <= 2 * 200
    assert parser.feed(b"\n" + GGA.encode() + b"\r\n")[-1].kind == "GGA"  # and it still parses after


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(GGA) - 1), st.characters(codec="latin-1"), st.booleans())
def test_mutated_sentences_never_crash(pos: int, ch: str, fix_checksum: bool) -> None:
    body = GGA[1:-3]
    mutated = body[:pos] + ch + body[pos + 1:]
    line = (sentence(mutated) if fix_checksum and mutated.isascii() else "$" + mutated + "*47").encode("latin-1")
    parser = NmeaParser()
    fixes = parser.feed(line + b"\r\n")
    assert len(fixes) + parser.bad + parser.counts["other"] + parser.counts["malformed"] >= 1


def _frame(seq: int = 0) -> RGBDFrame:
    return RGBDFrame("d", "s", seq, 0, 0.0, np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint16), 1000.0,
                     Intrinsics(4, 4, 1.0, 1.0, 2.0, 2.0))


def _poll_until(reader: NmeaReader, n: int, timeout: float = 5.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += reader.poll()
        time.sleep(0.01)  # polling the port like a 100 Hz source would, bounded by the deadline
    return got


def test_reader_over_loop_url_attaches_fixes_to_frames() -> None:
    reader = NmeaReader("loop://")
    assert reader.open()
    reader.port.write((GGA + "\r\n" + RMC[:-1] + "0\r\n" + RMC + "\r\n").encode())
    frame = reader.apply(_frame())
    assert [g["kind"] for g in frame.gps] == ["GGA", "RMC"] and frame.gps[0]["alt_m"] == 545.4
    assert reader.apply(_frame(1)).gps == ()  # each fix attached once
    stats = reader.stats()
    assert stats["bad_sentences"] == 1 and stats["latest"]["kind"] == "RMC" and stats["connected"]
    reader.close()


def test_reader_on_a_pty_survives_unplug_and_replug(tmp_path: Path) -> None:
    link = tmp_path / "ttyGPS"  # like a udev symlink: the path stays, the device behind it changes
    master, slave = os.openpty()
    link.symlink_to(os.ttyname(slave))
    reader = NmeaReader(str(link), retry_s=0.05)
    assert reader.poll() == [] and reader.stats()["connected"]  # pyserial flushes input on open: open first
    os.write(master, (GGA + "\r\n").encode())
    assert [f.kind for f in _poll_until(reader, 1)] == ["GGA"]
    os.close(master)  # unplugged: reads fail with EIO
    os.close(slave)
    deadline = time.monotonic() + 5
    while reader.port_errors == 0 and time.monotonic() < deadline:
        assert reader.poll() == []
    assert reader.port_errors >= 1 and not reader.stats()["connected"]
    master, slave = os.openpty()  # replugged under the same name
    link.unlink()
    link.symlink_to(os.ttyname(slave))
    deadline = time.monotonic() + 5
    while not reader.stats()["connected"] and time.monotonic() < deadline:
        reader.poll()
        time.sleep(0.01)  # waiting out retry_s, bounded by the deadline
    os.write(master, (RMC + "\r\n").encode())
    assert [f.kind for f in _poll_until(reader, 1)] == ["RMC"]
    reader.close()
    os.close(master)
    os.close(slave)


def test_missing_port_never_raises() -> None:
    reader = NmeaReader("/dev/ttyNOPE0", retry_s=60)
    assert reader.apply(_frame()).gps == ()
    assert reader.apply(_frame(1)).gps == () and reader.port_errors == 1  # no retry storm


def test_gps_source_wraps_any_source() -> None:
    from capture import open_source

    source = open_source("synthetic", width=64, height=48, pace="fast", n_frames=3, gps="loop://")
    assert source.intrinsics.width == 64 and source.depth_scale == 1000.0 and source.fps == 30.0
    source.open()
    first = source.read()
    assert first is not None and first.gps == ()
    source.reader.port.write((GGA + "\r\n").encode())
    second = source.read()
    assert second is not None and [g["kind"] for g in second.gps] == ["GGA"] and second.gps[0]["satellites"] == 8
    assert source.read() is not None and source.read() is None
    source.close()
