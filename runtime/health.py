"""Per-stage HTTP endpoints: /metrics (Prometheus, see ``runtime.metrics``), /healthz (liveness), /readyz (readiness).

Served from a daemon thread so a stage's event loop or worker thread being
busy never blocks a probe; liveness instead checks that the stage's main loop
has beaten recently.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from runtime.metrics import READY


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
