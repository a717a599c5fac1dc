"""A broker for the demo on any machine: mosquitto when installed, else amqtt in-process.

    url, stop = start_broker()     # "mqtt://127.0.0.1:PORT"; stop() shuts it down

amqtt (0.12) speaks MQTT 3.1.1 only (our sender and ingest fall back automatically; shared
subscriptions need mosquitto or another MQTT 5 broker) and its `Broker` must be built inside a
running asyncio loop, so it gets a thread with its own loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("embedded broker exited during startup")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"embedded broker not listening on port {port} after {timeout}s")


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
                                              if os.path.exists(p)), None)


def start_broker(prefer: str = "auto", timeout: float = 10.0) -> tuple[str, Callable[[], None]]:
    """(url, stop) of a fresh loopback broker on a free port. prefer: auto | mosquitto | amqtt."""
    binary = mosquitto_binary() if prefer in ("auto", "mosquitto") else None
    if prefer == "mosquitto" and binary is None:
        raise RuntimeError("mosquitto is not installed")
    return _start_mosquitto(binary, timeout) if binary else _start_amqtt(timeout)


def _start_mosquitto(binary: str, timeout: float) -> tuple[str, Callable[[], None]]:
    port = _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="crowdcap-broker-"))
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\nlog_dest none\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, timeout, lambda: proc.poll() is None)
    except Exception:
        proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)

    return f"mqtt://127.0.0.1:{port}", stop


def _start_amqtt(timeout: float) -> tuple[str, Callable[[], None]]:
    from amqtt.broker import Broker

    # amqtt logs a traceback for every refused MQTT 5 CONNECT (our clients then fall back to 3.1.1).
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    port = _free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}
    config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
              "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}

    async def _main() -> None:
        try:
            broker = Broker(config)  # must be constructed inside the running loop
            await broker.start()
            holder["broker"] = broker
        except Exception as e:  # reported to the caller below
            holder["error"] = e
        ready.set()

    def _run() -> None:
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(lambda _loop, ctx: log.debug("amqtt: %s", ctx.get("message")))
        loop.create_task(_main())
        loop.run_forever()

    thread = threading.Thread(target=_run, name="amqtt-broker", daemon=True)
    thread.start()
    if not ready.wait(timeout) or "error" in holder:
        loop.call_soon_threadsafe(loop.stop)
        raise RuntimeError(f"amqtt broker failed to start: {holder.get('error', 'timeout')}")
    _wait_port(port, timeout, thread.is_alive)

    def stop() -> None:
        if not loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(holder["broker"].shutdown(), loop)
        try:
            fut.result(10)
        except Exception as e:  # noqa: BLE001 - shutting down anyway
            log.debug("amqtt shutdown: %s", e)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return f"mqtt://127.0.0.1:{port}", stop
