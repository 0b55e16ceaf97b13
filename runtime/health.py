"""Per-stage HTTP endpoints: /metrics (Prometheus), /healthz (liveness), /readyz (readiness).

Served from a daemon thread so a stage's event loop or worker thread being
busy never blocks a probe; liveness instead checks that the stage's main loop
has beaten recently.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

# The metrics every stage exposes. Labels say which stage and topic; a stage adds its own beside these.
EVENTS_IN = Counter(
    "vigil_events_in_total", "Input events a stage has finished with: outputs delivered, or dead-lettered.", ["stage", "topic"],
)
EVENTS_OUT = Counter("vigil_events_out_total", "Events a stage produced.", ["stage", "topic"])
DEAD_LETTERS = Counter("vigil_dead_letters_total", "Events sent to the dead-letter topic.", ["stage", "reason"])
BATCH_SIZE = Histogram("vigil_batch_size", "Events per processed batch.", ["stage"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
PROCESS_SECONDS = Histogram(
    "vigil_process_seconds", "Time spent processing one batch (model or search time included).", ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LAG_SECONDS = Histogram(
    "vigil_event_age_seconds", "Age of an event's source time when the stage finished with it.", ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 5, 10, 30, 60, 300),
)
READY = Gauge("vigil_ready", "1 when the stage is ready to serve.", ["stage"])
LAST_BATCH_DONE = Gauge(
    "vigil_last_batch_done_timestamp_seconds",
    "Wall-clock time (Unix seconds) at which the stage last finished a batch, outputs delivered.", ["stage"],
)


class Health:
    def __init__(self, stage: str, *, stall_after_s: float = 120):
        self.stage = stage
        self.stall_after_s = stall_after_s
        self._ready = False
        self._last_beat = time.monotonic()
        self.reason = "starting"

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready = ready
        self.reason = reason or ("ready" if ready else "not ready")
        READY.labels(self.stage).set(1 if ready else 0)

    @property
    def alive(self) -> bool:
        return time.monotonic() - self._last_beat < self.stall_after_s

    @property
    def ready(self) -> bool:
        return self._ready and self.alive


def serve_health(health: Health, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the endpoints in a daemon thread; returns the server (``server.server_port`` is the bound port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path == "/metrics":
                self._reply(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                ok = health.alive
                self._reply(200 if ok else 503, b"ok\n" if ok else b"stalled\n")
            elif self.path == "/readyz":
                ok = health.ready
                self._reply(200 if ok else 503, f"{health.reason}\n".encode())
            else:
                self._reply(404, b"not found\n")

        def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8"):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # probes every few seconds would flood the logs
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
