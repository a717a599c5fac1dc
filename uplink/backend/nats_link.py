"""The ingest on a NATS JetStream cluster, NATS-native: a durable pull consumer that workers share.

Chosen over MQTT for the ingest side of a NATS cluster (docs/deployment.md says why): NATS speaks MQTT
3.1.1 only, so MQTT 5 shared subscriptions do not exist there, and two MQTT ingest sessions would each
receive everything. Devices still speak MQTT to any node; what they publish on `crowdcap/v1/...` is
also a NATS subject `crowdcap.v1....`, which the stream `CROWDCAP` (file storage, replicated) keeps.
Every ingest process attaches to one durable consumer: JetStream hands each message to one of them,
redelivers what is not acknowledged within `ack_wait` (a worker that died, a storage error), and
`max_ack_pending` bounds what is out at once. A message is acknowledged only after it is stored.

Acks to devices (uplink/backend/confirm.py) are published as core NATS messages on
`crowdcap.v1.<device>.ack`, which MQTT subscribers receive (at QoS 0: a lost one heals, because a
re-sent message is re-acknowledged).

    brokers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"]   # [ingest]
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uplink.backend.ingest import Ingest

log = logging.getLogger(__name__)

STREAM = "CROWDCAP"
SUBJECTS = "crowdcap.v1.>"


def is_nats_url(url: str) -> bool:
    return url.startswith(("nats://", "tls://"))


class NatsLink:
    """Same surface as connection.Connection: open(), watch(), reconnect(), close(), connected, url,
    publish(topic, payload)."""

    def __init__(self, ingest: Ingest, durable: str = "crowdcap-ingest", replicas: int = 3,
                 ack_wait: float = 30.0) -> None:
        self.ing = ingest
        self.cfg = ingest.cfg
        self.durable = durable
        self.replicas = replicas
        self.ack_wait = ack_wait
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ingest-nats", daemon=True)
        self.nc = None
        self._connected = threading.Event()
        self._task: asyncio.Future | None = None
        self.url = ",".join(self.cfg.brokers)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _run(self, coro, timeout: float | None = 30.0):  # noqa: ANN001, ANN202
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def open(self) -> None:
        import nats
        from nats.js.api import ConsumerConfig, StorageType, StreamConfig

        self.thread.start()
        tls = None
        if any(u.startswith("tls://") for u in self.cfg.brokers) or self.cfg.tls_ca or self.cfg.tls_cert:
            tls = ssl.create_default_context(cafile=self.cfg.tls_ca or None)
            if self.cfg.tls_cert:
                tls.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
            if self.cfg.tls_insecure:
                tls.check_hostname = False

        async def connect() -> None:
            async def disconnected() -> None:
                self._connected.clear()

            async def reconnected() -> None:
                self._connected.set()

            async def error(e: Exception) -> None:  # a node down is routine in a cluster: no traceback
                self.ing.count("nats_errors")
                log.debug("ingest: NATS: %s", e)

            self.nc = await nats.connect(servers=list(self.cfg.brokers), name=self.ing.client_id,
                                         user=self.cfg.username or None, password=self.cfg.password or None,
                                         tls=tls, connect_timeout=5, max_reconnect_attempts=-1,
                                         reconnect_time_wait=0.5, disconnected_cb=disconnected,
                                         reconnected_cb=reconnected, error_cb=error)
            js = self.nc.jetstream()
            try:
                await js.stream_info(STREAM)
            except Exception:  # noqa: BLE001 - not found: make it (idempotent across workers)
                await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECTS], storage=StorageType.FILE,
                                                 num_replicas=self.replicas, max_age=86400 * 7))
            cfg = ConsumerConfig(durable_name=self.durable, ack_wait=self.ack_wait,
                                 max_ack_pending=max(64, 4 * self.cfg.receive_maximum), filter_subject=SUBJECTS)
            self.psub = await js.pull_subscribe(SUBJECTS, durable=self.durable, stream=STREAM, config=cfg)
            self._connected.set()

        try:
            self._run(connect(), 60)
        except Exception as e:  # noqa: BLE001 - any failure to reach the cluster is one clear error
            self.close()
            raise ConnectionError(f"ingest: cannot attach to NATS JetStream at {self.url}: {e}") from None
        log.info("ingest: attached to NATS JetStream %s (stream %s, durable consumer %s)", self.url, STREAM,
                 self.durable)
        self._task = asyncio.run_coroutine_threadsafe(self._pull(), self.loop)

    async def _pull(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        loop = asyncio.get_running_loop()
        batch = max(1, min(64, self.cfg.receive_maximum))
        while not self.ing.stopping:
            try:
                msgs = await self.psub.fetch(batch, timeout=1.0)
            except (TimeoutError, NatsTimeout):
                continue
            except Exception as e:  # noqa: BLE001 - a node change or reconnect: try again
                log.debug("ingest: fetch failed: %s", e)
                await asyncio.sleep(0.5)
                continue
            for m in msgs:
                topic = m.subject.replace(".", "/")

                def ack(m=m) -> None:  # called from a worker thread once stored
                    asyncio.run_coroutine_threadsafe(m.ack(), self.loop)

                # blocks (in an executor thread) while the ingest's queue is full: backpressure
                await loop.run_in_executor(None, self.ing.submit, topic, m.data, ack)

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        if self.nc is not None and self._connected.is_set():
            asyncio.run_coroutine_threadsafe(self.nc.publish(topic.replace("/", "."), payload), self.loop)

    @property
    def client(self):  # noqa: ANN201 - the confirmer checks for a client before publishing
        return self if self.nc is not None else None

    def watch(self) -> None:
        pass  # nats-py reconnects across the server list by itself

    def reconnect(self) -> None:
        pass  # not acknowledged = redelivered by JetStream after ack_wait

    def close(self) -> None:
        if self._task is not None:
            try:
                self._task.result(10)
            except Exception:  # noqa: BLE001
                pass
        if self.nc is not None:
            try:  # what was fetched is acked or left to redelivery; nothing to drain
                self._run(self.nc.close(), 10)
            except Exception:  # noqa: BLE001
                pass
        self._connected.clear()
        if self.thread.is_alive():
            async def cancel_rest() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            try:
                self._run(cancel_rest(), 10)
            except Exception:  # noqa: BLE001
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
