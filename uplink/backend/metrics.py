"""Prometheus metrics and a health endpoint for the ingest (`[ingest] metrics_port`).

    server = serve_metrics(ingest, "127.0.0.1", 9108)    # GET /metrics (Prometheus text), GET /healthz
    server.shutdown()

Nothing on the hot path: a collector reads `Ingest.stats()` (counters the ingest keeps anyway) at
scrape time. /healthz answers 200 `{"ok": true, ...}` while connected and subscribed, else 503.
Per-device lag is exported for devices with an open session only (idle ones are evicted), so a flood
of fake device ids cannot blow up the label set.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from uplink.backend.ingest import Ingest

_COUNTERS = {  # stats key -> (metric name, help)
    "frame": ("crowdcap_ingest_frames", "frames committed"),
    "cloud": ("crowdcap_ingest_clouds", "point clouds stored"),
    "messages": ("crowdcap_ingest_messages", "messages stored (any kind, duplicates included)"),
    "bytes": ("crowdcap_ingest_bytes", "bytes of stored messages"),
    "duplicate": ("crowdcap_ingest_duplicates", "messages already stored (re-sends)"),
    "historical": ("crowdcap_ingest_historical", "messages replayed from a device backlog"),
    "confirms_sent": ("crowdcap_ingest_confirms_sent", "end-to-end acks published to devices"),
    "storage_errors": ("crowdcap_ingest_storage_errors", "messages not stored for a storage error (retried)"),
    "failovers": ("crowdcap_ingest_failovers", "switches to another broker URL"),
    "connects": ("crowdcap_ingest_connects", "connections (and reconnections) to the broker"),
    "sessions_closed": ("crowdcap_ingest_sessions_closed", "sessions dropped from memory after idling"),
}


class IngestCollector:
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        s = self.ingest.stats()
        for key, (name, doc) in _COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=s.get(key, 0))
        rej = CounterMetricFamily("crowdcap_ingest_rejected", "messages refused, by reason", labels=["reason"])
        for reason, n in sorted(s["rejected"].items()):
            rej.add_metric([reason], n)
        yield rej
        rea = CounterMetricFamily("crowdcap_ingest_reassembly", "reassembly events (expired, over budget, ...)",
                                  labels=["event"])
        for event, n in sorted(s["reassembly"].items()):
            rea.add_metric([event], n)
        yield rea
        yield GaugeMetricFamily("crowdcap_ingest_reassembly_buffers", "incomplete multi-chunk messages on disk",
                                value=s["partials"])
        yield GaugeMetricFamily("crowdcap_ingest_reassembly_bytes", "bytes of incomplete messages on disk",
                                value=s["partial_bytes"])
        yield GaugeMetricFamily("crowdcap_ingest_queue", "received messages waiting for a worker", value=s["queue"])
        yield GaugeMetricFamily("crowdcap_ingest_sessions_open", "sessions held in memory", value=s["sessions_open"])
        yield GaugeMetricFamily("crowdcap_ingest_connected", "1 while connected and subscribed",
                                value=1 if s["connected"] else 0)
        lag = GaugeMetricFamily("crowdcap_ingest_device_lag_seconds",
                                "capture to arrival of the device's latest live frame", labels=["device"])
        for device, seconds in sorted(self.ingest.lag_snapshot().items()):
            lag.add_metric([device], seconds)
        yield lag


def serve_metrics(ingest: Ingest, host: str, port: int) -> ThreadingHTTPServer:
    registry = CollectorRegistry()
    registry.register(IngestCollector(ingest))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?")[0] == "/metrics":
                body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
            elif self.path.split("?")[0] in ("/healthz", "/health"):
                s = ingest.stats()
                ok = bool(s["connected"])
                body = json.dumps({"ok": ok, "connected": s["connected"], "broker": s["broker"],
                                   "queue": s["queue"], "partials": s["partials"]}).encode()
                ctype, code = "application/json", 200 if ok else 503
            else:
                body, ctype, code = b"not found: try /metrics or /healthz\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # scrapes are not log lines
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="ingest-metrics", daemon=True).start()
    return server
