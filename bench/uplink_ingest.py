"""Ingest scale-out section of `python -m bench uplink` (also `python -m bench.uplink_ingest`):
frames/s per ingest worker process draining a backlog, its CPU per frame and peak RSS, on mosquitto
(MQTT, persistent session) and on a 3-node NATS JetStream cluster (durable consumer; 1 and 2 workers).
`--direct [N]`: the ingest's CPU per frame and per step without a broker, the old (cv2.imencode) and
new depth PNG writers side by side in one run (bench/_ingest_steps.py). `--writers [N]`: the whole
`crowdcap ingest` process over mosquitto draining N frames, per depth PNG writer, alternating.

Each run preloads N signed 640×480 frames into the broker while no ingest runs, then starts
`crowdcap ingest` process(es) with a device registry (signature checks included) and times the drain
until N frames are committed. CPU = utime + stime of the worker processes (/proc), RSS = VmHWM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vmhwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _committed(out: Path) -> int:
    total = 0
    for log in out.glob("*/*/frames.jsonl"):
        total += log.read_bytes().count(b"\n")
    return total


def _start(cfg_text: str, tmp: Path, name: str) -> subprocess.Popen:
    cfg = tmp / f"{name}.toml"
    cfg.write_text(cfg_text)
    return subprocess.Popen([sys.executable, "-m", "device.cli", "--log-level", "INFO", "ingest", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.log", "ab"))  # noqa: SIM115


def _wait_log(tmp: Path, name: str, text: bytes, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in (tmp / f"{name}.log").read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"bench: ingest {name} did not come up: {(tmp / f'{name}.log').read_text()[-500:]}")
        time.sleep(0.1)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def _publish_backlog(msgs: list[bytes], host: str, port: int, key, protocol) -> None:  # noqa: ANN001
    import paho.mqtt.client as mqtt

    from uplink import wire

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}", protocol=protocol)
    c.max_inflight_messages_set(64)
    c.connect(host, port)
    c.loop_start()
    epoch = os.urandom(8)
    infos = []
    for i, m in enumerate(msgs):
        for p in wire.chunks(m, epoch + i.to_bytes(8, "big"), 128 * 1024, key.sign):
            infos.append(c.publish("crowdcap/v1/bench/frame", p, qos=1))
        if len(infos) > 200:
            for info in infos:
                info.wait_for_publish(60)
            infos = []
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


def _drain(cfg_text: str, tmp: Path, n: int, workers: int, ready: bytes, tag: str, timeout: float = 300) -> dict:
    out = tmp / f"out-{tag}"
    procs = [_start(cfg_text.replace("@OUT@", str(out)).replace("@ID@", f"{tag}-{i}"), tmp, f"{tag}-{i}")
             for i in range(workers)]
    try:
        for i, p in enumerate(procs):
            _wait_log(tmp, f"{tag}-{i}", ready, p)
        # timed from the moment every worker is attached (process start-up excluded)
        t0, done0, cpu0 = time.perf_counter(), _committed(out), sum(_proc_cpu_s(p.pid) for p in procs)
        deadline = time.monotonic() + timeout
        while _committed(out) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        dt = time.perf_counter() - t0
        cpu = sum(_proc_cpu_s(p.pid) for p in procs) - cpu0
        rss = max(_vmhwm_mb(p.pid) for p in procs)
        timed = _committed(out) - done0
    finally:
        _stop(procs)
    got = _committed(out)
    return {"workers": workers, "frames": got, "timed_frames": timed, "seconds": round(dt, 2),
            "frames_per_s": round(timed / dt, 1), "frames_per_s_per_worker": round(timed / dt / workers, 1),
            "cpu_ms_per_frame": round(cpu / max(1, timed) * 1000, 2), "peak_rss_mb_per_worker": round(rss, 1)}


def bench_ingest_scale(msgs: list[bytes], tmp: Path) -> dict:
    """Drain a backlog of `msgs` (distinct seqs) on mosquitto and on a 3-node NATS cluster."""
    import paho.mqtt.client as mqtt

    sys.path.insert(0, str(TESTS))
    from mqtt_broker import MosquittoBroker
    from nats_cluster import NatsCluster

    from uplink.identity import DeviceKey, registry_entry

    key = DeviceKey.load_or_create(tmp / "bench-key")
    reg = tmp / "devices.toml"
    reg.write_text(registry_entry("bench", key))
    n = len(msgs)
    common = f'out = "@OUT@"\nregistry = "{reg}"\nworkers = 2\nclient_id = "bench-ingest-@ID@"\n'
    result: dict = {"backlog_frames": n, "backlog_mb": round(sum(len(m) for m in msgs) / 1e6, 1)}
    with MosquittoBroker() as b:
        cfg = f'[ingest]\nbrokers = ["{b.url}"]\n' + common
        p = _start(cfg.replace("@OUT@", str(tmp / "out-m0")).replace("@ID@", "mosq-0"), tmp, "mosq-pre")
        _wait_log(tmp, "mosq-pre", b"connected to", p)  # makes the persistent session, then goes
        _stop([p])
        _publish_backlog(msgs, b.host, b.port, key, mqtt.MQTTv5)
        result["mosquitto"] = _drain(cfg, tmp, n, 1, b"connected to", "mosq")
    with NatsCluster() as c:
        urls = ", ".join(f'"nats://127.0.0.1:{p["client"]}"' for p in c.ports)
        cfg = f"[ingest]\nbrokers = [{urls}]\n" + common
        p = _start(cfg.replace("@OUT@", str(tmp / "out-nats-pre")).replace("@ID@", "nats-pre"), tmp, "nats-pre")
        _wait_log(tmp, "nats-pre", b"attached to NATS", p)  # makes the stream and the durable consumer
        _stop([p])
        host, port = c.mqtt_urls[0].rsplit("/", 1)[1].split(":")
        for workers in (1, 2):
            # the durable consumer resumes where the last run stopped: publish the backlog again (stored
            # again, into a fresh output folder)
            _publish_backlog(msgs, host, int(port), key, mqtt.MQTTv311)
            result[f"nats_cluster_{workers}_workers"] = _drain(cfg, tmp, n, workers, b"attached to NATS",
                                                               f"nats{workers}")
    return result


def bench_ingest_writers(msgs: list[bytes], tmp: Path, writers: tuple[str, ...] = ("opencv", "fast", "opencv", "fast")
                         ) -> dict:
    """`crowdcap ingest` (a process, mosquitto, persistent session, registry) draining the same backlog
    once per `[ingest] depth_png` writer in turn: the whole process's CPU per frame, old vs new."""
    import paho.mqtt.client as mqtt

    sys.path.insert(0, str(TESTS))
    from mqtt_broker import MosquittoBroker

    from uplink.identity import DeviceKey, registry_entry

    key = DeviceKey.load_or_create(tmp / "bench-key")
    reg = tmp / "devices.toml"
    reg.write_text(registry_entry("bench", key))
    result: dict = {"backlog_frames": len(msgs), "runs": []}
    with MosquittoBroker() as b:
        cfg = (f'[ingest]\nbrokers = ["{b.url}"]\nout = "@OUT@"\nregistry = "{reg}"\nworkers = 2\n'
               'client_id = "bench-ingest-writers"\n')
        p = _start(cfg.replace("@OUT@", str(tmp / "out-w-pre")), tmp, "w-pre")
        _wait_log(tmp, "w-pre", b"connected to", p)  # makes the persistent session, then goes
        _stop([p])
        for i, w in enumerate(writers):
            _publish_backlog(msgs, b.host, b.port, key, mqtt.MQTTv5)
            run = _drain(cfg + f'depth_png = "{w}"\n', tmp, len(msgs), 1, b"connected to", f"w{i}-{w}")
            result["runs"].append({"depth_png": w, **run})
    for w in dict.fromkeys(writers):
        runs = [r["cpu_ms_per_frame"] for r in result["runs"] if r["depth_png"] == w]
        result[f"{w}_cpu_ms_per_frame_mean"] = round(sum(runs) / len(runs), 2)
    if {"opencv", "fast"} <= set(writers):
        result["cpu_ratio_fast_vs_opencv"] = round(result["fast_cpu_ms_per_frame_mean"]
                                                   / result["opencv_cpu_ms_per_frame_mean"], 3)
    result["load_average"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return result


def main(argv: list[str]) -> dict:
    """`[N]`: the broker drains (N frames); `--direct [N]`: the ingest's CPU per step, old and new
    depth PNG writers side by side (bench/_ingest_steps.py), no broker."""
    from bench.uplink import _frames, _messages, _reseq

    if argv and argv[0] == "--direct":
        from bench._ingest_steps import bench_device_encode, bench_direct, bench_png_only

        return {"bench": "uplink_ingest --direct", "png_step_alone": bench_png_only(),
                "device_uplink_stage_by_wire_codec": bench_device_encode(),
                "ingest_cpu_side_by_side": bench_direct(int(argv[1]) if len(argv) > 1 else 120)}
    if argv and argv[0] == "--writers":  # the whole ingest process over mosquitto, old vs new PNG writer
        tmp = Path(tempfile.mkdtemp(prefix="crowdcap-bench-ingest-"))
        try:
            return bench_ingest_writers(_reseq(_messages(_frames(12), int(argv[1]) if len(argv) > 1 else 300), "b1"), tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    n = int(argv[0]) if argv else 600
    tmp = Path(tempfile.mkdtemp(prefix="crowdcap-bench-ingest-"))
    try:
        msgs = _reseq(_messages(_frames(12), n), "b1")
        return bench_ingest_scale(msgs, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
