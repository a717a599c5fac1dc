"""`python -m bench uplink [--frames N] [--recovery-mb MB]`: the uplink through a local mosquitto, QoS 1.

Measures, in one run and on the same bytes, with `crowdcap ingest` in its own process confirming
(end-to-end acks, uplink.delivery = "ingest", the default):
- stage throughput at maximum rate: 640×480 synthetic frames (JPEG + lossless depth + manifest)
  through UplinkStage.apply → spool (fsync=interval) → Sender → mosquitto → ingest → ack, frames/s,
  MB/s, CPU per byte (device process only);
- the uplink alone (pre-encoded messages → spool → Sender), confirmed and with delivery = "broker",
  vs a bare paho publisher of the same chunk payloads with the same QoS-1 window: CPU per byte and
  the ratios (our overhead);
- at 30 fps: frames/s, capture → ingest latency p50/p99 and confirm latency p50/p99 (first send →
  the ingest's ack, after its fsync);
- spool append MB/s with fsync always / interval / off, and recovery time after SIGKILL of a
  process filling a spool of --recovery-mb (default 1024).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _frames(n_unique: int) -> list:
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(640, 480, pace="fast", device_id="bench", session_id="b1", n_frames=n_unique)
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f.replace(redaction={"regions": [{"bbox": [100, 80, 180, 190], "class": "face"}],
                                           "policy": "bench", "detector_ms": 9.1}))
    src.close()
    return frames


def _cfg(tmp: Path, url: str, **kw):
    from uplink.config import UplinkConfig

    return UplinkConfig(broker=url, spool_dir=str(tmp / "spool"), **kw)


def _cpu() -> float:
    return time.process_time()


def start_ingest(url: str, out: Path) -> subprocess.Popen:
    """`crowdcap ingest` in its own process (its CPU is not the device's), subscribed when returned."""
    import paho.mqtt.client as mqtt

    from uplink import plain

    ing = subprocess.Popen([sys.executable, "-m", "device.cli", "ingest", "--broker", url, "--out", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    host, port = url.rsplit("/", 1)[1].split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect(host, int(port))
    c.loop_start()
    deadline = time.monotonic() + 30
    while not (out / "probe" / "status.json").exists():
        if time.monotonic() > deadline or ing.poll() is not None:
            raise RuntimeError("bench: the ingest did not come up")
        c.publish("crowdcap/v1/probe/status", plain.encode("status", "probe", "p", 0, time.time(), {}), qos=1)
        time.sleep(0.2)
    c.loop_stop()
    c.disconnect()
    return ing


def bench_stage(frames: list, n: int, url: str, tmp: Path) -> dict:
    from uplink import build_stage

    stage = build_stage(_cfg(tmp, url), "bench", "b1")
    stage.start()
    t0, c0 = time.perf_counter(), _cpu()
    for i in range(n):
        f = frames[i % len(frames)]
        stage.apply(f.replace(seq=i, keyframe=(i % 10 == 0)))
    ok = stage.drain(120)
    dt, cpu = time.perf_counter() - t0, _cpu() - c0
    st = stage.status()
    stage.close()
    shutil.rmtree(tmp / "spool", ignore_errors=True)
    sent = st["sender"]["bytes_sent"]
    return {"confirmed": ok, "frames": n, "frames_per_s": round(n / dt, 1), "MB_per_s": round(sent / dt / 1e6, 2),
            "bytes_per_frame": int(st["frame_bytes"] / n), "cpu_s": round(cpu, 3),
            "cpu_ns_per_byte": round(cpu / sent * 1e9, 3)}


def _messages(frames: list, n: int) -> list[bytes]:
    from uplink import messages, wire

    codec = messages.depth_codec("delta-zstd")
    base = [wire.encode(messages.encode_frame(f, codec, 85)) for f in frames]
    return [base[i % len(base)] for i in range(n)]


def _reseq(msgs: list[bytes], session: str) -> list[bytes]:
    """The same bytes under distinct seqs (the envelope's seq is outside the body CRC) and a session
    id of the same length, so the ingest stores each one instead of deduping it."""
    out = []
    for i, m in enumerate(msgs):
        at, size = 36 + m[26], m[27]  # header, device id (length at 26), session id (length at 27)
        assert size == len(session)
        out.append(m[:8] + i.to_bytes(8, "big") + m[16:at] + session.encode() + m[at + size:])
    return out


def bench_uplink_only(msgs: list[bytes], url: str, tmp: Path, delivery: str = "ingest") -> dict:
    from uplink import build_stage, wire
    from uplink.spool import PRIO_FRAME

    stage = build_stage(_cfg(tmp, url, delivery=delivery), "bench", "b1")
    stage.start()
    total = sum(len(m) for m in msgs)
    t0, c0 = time.perf_counter(), _cpu()
    for m in msgs:
        stage.spool.append(m, PRIO_FRAME, wire.FRAME)
        stage.sender.wake()
    ok = stage.drain(120)
    dt, cpu = time.perf_counter() - t0, _cpu() - c0
    snd = stage.status()["sender"]
    sent = snd["bytes_sent"]
    stage.close()
    shutil.rmtree(tmp / "spool", ignore_errors=True)
    return {"delivery": delivery, "done": ok, "messages": len(msgs), "window": snd["window"],
            "MB_per_s": round(total / dt / 1e6, 2), "resent_unconfirmed": snd.get("resent_unconfirmed", 0),
            "messages_per_s": round(len(msgs) / dt, 1), "cpu_s": round(cpu, 3),
            "cpu_ns_per_byte": round(cpu / sent * 1e9, 3)}


def bench_bare_paho(msgs: list[bytes], host: str, port: int, window: int, max_payload: int) -> dict:
    import paho.mqtt.client as mqtt

    from uplink import wire

    payloads = [p for m in msgs for p in wire.chunks(m, os.urandom(16), max_payload)]
    total = sum(len(p) for p in payloads)
    sem = threading.Semaphore(window)
    done = threading.Event()
    acked = [0]

    def on_publish(c, u, mid, rc, props) -> None:  # noqa: ANN001
        acked[0] += 1
        sem.release()
        if acked[0] == len(payloads):
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_publish = on_publish
    c.max_inflight_messages_set(0)
    c.connect(host, port)
    c.loop_start()
    t0, c0 = time.perf_counter(), _cpu()
    for p in payloads:
        sem.acquire()
        c.publish("crowdcap/v1/bare/frame", p, qos=1)
    done.wait(120)
    dt, cpu = time.perf_counter() - t0, _cpu() - c0
    c.disconnect()
    c.loop_stop()
    return {"messages": len(msgs), "MB_per_s": round(total / dt / 1e6, 2), "cpu_s": round(cpu, 3),
            "cpu_ns_per_byte": round(cpu / total * 1e9, 3)}


def bench_latency(frames: list, url: str, tmp: Path, out: Path, seconds: float = 6.0, fps: float = 30.0) -> dict:
    from uplink import build_stage
    from uplink.backend.sink import read_frames

    stage = build_stage(_cfg(tmp, url), "bench", "lat")
    stage.start()
    n = int(seconds * fps)
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stage.apply(frames[i % len(frames)].replace(seq=i, session_id="lat", t_utc=time.time()))
    ok = stage.drain(60)
    dt = time.monotonic() - t0
    snd = stage.status()["sender"]
    stage.close()
    got = read_frames(out / "bench" / "lat")
    lat = np.array([f["latency_s"] for f in got]) * 1000
    shutil.rmtree(tmp / "spool", ignore_errors=True)
    conf = snd.get("confirm_latency_ms") or {}
    return {"fps": fps, "frames_sent": n, "frames_ingested": len(got), "confirmed": ok,
            "confirmed_frames_per_s": round(n / dt, 1),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
            "confirm_latency_ms_p50": conf.get("p50"), "confirm_latency_ms_p99": conf.get("p99")}


def bench_spool_append(msgs: list[bytes], tmp: Path, policies: tuple[str, ...] = ("always", "interval", "off"),
                       key: str = "") -> dict:
    from uplink.spool import Spool

    out = {}
    for policy in policies:
        d = tmp / f"spool-{policy}"
        s = Spool(d, quota_bytes=1 << 40, fsync=policy)
        k = 60 if policy == "always" else len(msgs)
        t0 = time.perf_counter()
        for m in msgs[:k]:
            s.append(m, 1, 1)
        s.sync()
        dt = time.perf_counter() - t0
        if key:
            continue
        out[f"fsync_{policy}_MB_per_s"] = round(sum(len(m) for m in msgs[:k]) / dt / 1e6, 1)
        out[f"fsync_{policy}_appends_per_s"] = round(k / dt, 1)
        s.close()
        shutil.rmtree(d, ignore_errors=True)
    return out


_FILLER = """
import sys
from uplink.spool import Spool
s = Spool(sys.argv[1], quota_bytes=1 << 40, fsync="off")
rec = bytes(range(256)) * 1200
target = int(sys.argv[2]) * 1024 * 1024
done = 0
while True:
    s.append(rec, 1, 1)
    done += len(rec)
    if done >= target:
        print("full", flush=True)
        target = 1 << 62
"""


def bench_recovery(tmp: Path, mb: int) -> dict:
    from uplink.spool import Spool

    d = tmp / "spool-recovery"
    p = subprocess.Popen([sys.executable, "-c", _FILLER, str(d), str(mb)], stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"full"
    p.send_signal(signal.SIGKILL)
    p.wait()
    size = sum(f.stat().st_size for f in d.glob("seg-*.log"))
    os.sync()
    t0 = time.perf_counter()
    s = Spool(d, quota_bytes=1 << 40)
    dt = time.perf_counter() - t0
    n = len(s)
    torn = s.counters.get("torn_bytes_dropped", 0)
    s.close()
    shutil.rmtree(d, ignore_errors=True)
    return {"spool_MB": round(size / 2**20, 1), "records": n, "recovery_s": round(dt, 3),
            "torn_bytes_dropped": torn, "note": "page cache warm (the spool was just written)"}


def bench_ingest(msgs: list[bytes], tmp: Path) -> dict:
    """The ingest's own cost per frame (verify, decode depth, PNG-16, files, commit), no broker."""
    from uplink import wire
    from uplink.backend.ingest import Ingest

    ing = Ingest("mqtt://127.0.0.1:1", tmp / "ingest-only")
    # a distinct seq per message (the envelope's seq field is outside the body CRC)
    unique = [m[:8] + i.to_bytes(8, "big") + m[16:] for i, m in enumerate(msgs)]
    payloads = [c for i, m in enumerate(unique) for c in wire.chunks(m, (i + 1).to_bytes(16, "big"), 131072)]
    from concurrent.futures import ThreadPoolExecutor

    t0, c0 = time.perf_counter(), _cpu()
    with ThreadPoolExecutor(ing.workers) as pool:  # as Ingest.run does: one task per MQTT payload
        list(pool.map(lambda p: ing.handle("crowdcap/v1/bench/frame", p), payloads))
    dt, cpu = time.perf_counter() - t0, _cpu() - c0
    st = ing.stats()
    shutil.rmtree(tmp / "ingest-only", ignore_errors=True)
    return {"messages": len(msgs), "workers": ing.workers, "stored": st.get("frame", 0),
            "duplicates": st.get("duplicate", 0), "frames_per_s": round(len(msgs) / dt, 1),
            "cpu_ms_per_frame": round(cpu / len(msgs) * 1000, 2)}


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench uplink")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--recovery-mb", type=int, default=1024)
    args = ap.parse_args(argv)
    from uplink.config import UplinkConfig
    from uplink.embedded import start_broker

    tmp = Path(tempfile.mkdtemp(prefix="crowdcap-bench-uplink-"))
    url, stop = start_broker("mosquitto")
    host, port = url.rsplit("/", 1)[1].split(":")
    defaults = UplinkConfig()
    try:
        frames = _frames(12)
        msgs = _messages(frames, args.frames)
        ingest = start_ingest(url, tmp / "ingest-out")
        try:
            result = {
                "frame": "640x480 synthetic, JPEG q85 + delta-zstd depth + manifest",
                "broker": "mosquitto (local, QoS 1)", "cores": os.cpu_count(),
                "ingest": "crowdcap ingest, own process, acks after fsync",
                "stage": bench_stage(frames, args.frames, url, tmp),
                "uplink_confirmed": bench_uplink_only(_reseq(msgs, "u1"), url, tmp, "ingest"),
                "uplink_broker_puback": bench_uplink_only(_reseq(msgs, "u2"), url, tmp, "broker"),
            }
            result["bare_paho"] = bench_bare_paho(msgs, host, int(port), window=result["uplink_confirmed"]["window"],
                                                  max_payload=defaults.max_payload)
            bare = result["bare_paho"]["cpu_ns_per_byte"]
            result["cpu_per_byte_ratio_confirmed_vs_bare_paho"] = round(
                result["uplink_confirmed"]["cpu_ns_per_byte"] / bare, 2)
            result["cpu_per_byte_ratio_broker_puback_vs_bare_paho"] = round(
                result["uplink_broker_puback"]["cpu_ns_per_byte"] / bare, 2)
            result["at_30fps"] = bench_latency(frames, url, tmp, tmp / "ingest-out")
        finally:
            ingest.send_signal(signal.SIGTERM)
            ingest.wait(60)
        result["spool_append"] = bench_spool_append(msgs, tmp)
        # what writing every byte to the spool file costs by itself (the price of crash safety)
        c0 = _cpu()
        result["spool_append"].update(bench_spool_append(msgs, tmp, policies=("off",), key="cpu"))
        result["spool_write_cpu_ns_per_byte"] = round((_cpu() - c0) / sum(len(m) for m in msgs) * 1e9, 3)
        result["cpu_per_byte_ratio_confirmed_without_spool_write"] = round(
            (result["uplink_confirmed"]["cpu_ns_per_byte"] - result["spool_write_cpu_ns_per_byte"])
            / result["bare_paho"]["cpu_ns_per_byte"], 2)
        result["ingest_alone"] = bench_ingest(msgs[:200], tmp)
        result["recovery"] = bench_recovery(tmp, args.recovery_mb)
    finally:
        stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
