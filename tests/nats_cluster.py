"""A real 3-node NATS JetStream cluster with MQTT enabled, on loopback, for tests and the bench.

    with NatsCluster() as c:            # Debian's nats-server (install.sh installs it for tests)
        c.mqtt_urls                     # ["mqtt://127.0.0.1:P1", ...]: MQTT 3.1.1, QoS 1 in JetStream
        c.kill(i); c.start(i)           # SIGKILL one node; start it again (same ports, same store)
        c.node_of_port(port)            # which node serves an MQTT port

Each node has its own client, cluster-route, MQTT and monitoring ports and its own JetStream store
folder; routes name every node. Startup waits (bounded) until every node's /healthz says JetStream
is ready and an MQTT client can connect and subscribe at QoS 1 (the MQTT session streams exist).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from mqtt_broker import free_port, port_open

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsCluster:
    def __init__(self, nodes: int = 3, host: str = "127.0.0.1") -> None:
        if not Path(NATS_SERVER).exists():
            raise RuntimeError(f"nats-server not found at {NATS_SERVER} (./install.sh test installs it)")
        self.host = host
        self.dir = Path(tempfile.mkdtemp(prefix="crowdcap-nats-"))
        self.ports = [{"client": free_port(), "cluster": free_port(), "mqtt": free_port(), "http": free_port()}
                      for _ in range(nodes)]
        self.procs: list[subprocess.Popen | None] = [None] * nodes
        for i, p in enumerate(self.ports):
            routes = ", ".join(f"nats-route://{host}:{q['cluster']}" for j, q in enumerate(self.ports) if j != i)
            (self.dir / f"n{i}.conf").write_text(f"""
server_name: n{i}
listen: {host}:{p['client']}
http: {host}:{p['http']}
jetstream {{ store_dir: "{self.dir / f'store{i}'}", max_memory_store: 256MB, max_file_store: 4GB }}
cluster {{ name: crowdcap, listen: {host}:{p['cluster']}, routes: [{routes}] }}
mqtt {{ listen: {host}:{p['mqtt']}, stream_replicas: {nodes} }}
""")

    @property
    def mqtt_urls(self) -> list[str]:
        return [f"mqtt://{self.host}:{p['mqtt']}" for p in self.ports]

    @property
    def url_list(self) -> str:
        return ",".join(self.mqtt_urls)

    def node_of_port(self, port: int) -> int:
        return next(i for i, p in enumerate(self.ports) if p["mqtt"] == port)

    def start(self, i: int | None = None, timeout: float = 60.0) -> None:
        idx = range(len(self.ports)) if i is None else [i]
        for n in idx:
            if self.procs[n] is None or self.procs[n].poll() is not None:
                log = open(self.dir / f"n{n}.log", "ab")  # noqa: SIM115 - handed to the child
                try:
                    self.procs[n] = subprocess.Popen([NATS_SERVER, "-c", str(self.dir / f"n{n}.conf")],
                                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                finally:
                    log.close()
        deadline = time.monotonic() + timeout
        for n in idx:
            self._wait_ready(n, deadline)

    def _healthy(self, n: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.ports[n]['http']}/healthz", timeout=1) as r:
                return json.loads(r.read()).get("status") == "ok"
        except (OSError, ValueError):
            return False

    def _wait_ready(self, n: int, deadline: float) -> None:
        import paho.mqtt.client as mqtt

        while True:
            proc = self.procs[n]
            if proc is None or proc.poll() is not None:
                raise RuntimeError(f"nats-server n{n} exited: {self.log_tail(n)}")
            if port_open(self.host, self.ports[n]["mqtt"]) and self._healthy(n):
                subscribed = []
                c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{n}-{time.monotonic_ns()}",
                                protocol=mqtt.MQTTv311)
                c.on_subscribe = lambda *a, s=subscribed: s.append(1)
                try:
                    c.connect(self.host, self.ports[n]["mqtt"], 10)
                    c.loop_start()
                    c.subscribe("crowdcap/probe", qos=1)
                    t = time.monotonic() + 5
                    while not subscribed and time.monotonic() < min(t, deadline):
                        time.sleep(0.05)
                except OSError:
                    pass
                finally:
                    c.disconnect()
                    c.loop_stop()
                if subscribed:
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nats-server n{n} not ready (JetStream + MQTT): {self.log_tail(n)}")
            time.sleep(0.2)

    def kill(self, i: int) -> None:
        proc, self.procs[i] = self.procs[i], None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            self.procs[i] = None

    def log_tail(self, i: int, n: int = 2000) -> str:
        try:
            return (self.dir / f"n{i}.log").read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
