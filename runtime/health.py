"""Per-stage HTTP endpoints: /metrics (Prometheus, see ``runtime.metrics``), /healthz (liveness), /readyz (readiness).

Served from a daemon thread so a stage's event loop or worker thread being
busy never blocks a probe; liveness instead checks that the stage's main loop
has beaten recently and, for a stream stage, that the batch in hand progresses.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from runtime.metrics import READY


class Health:
    """Liveness and readiness of one stage.

    Alive: the main loop beat within ``stall_after_s``, and no batch has been in hand longer than ``batch_stall_s``
    without progress (``progress``: an attempt or a retry). With ``alive_while_starting=False`` the stage is not alive
    until ``started`` (its startup probe then bounds model loading). Ready: alive, ``set_ready(True)`` said so, and
    nothing ``block``s it (a dependency being retried, the broker unreachable).
    """

    def __init__(self, stage: str, *, stall_after_s: float = 120, batch_stall_s: float | None = None,
                 alive_while_starting: bool = True):
        self.stage = stage
        self.stall_after_s = stall_after_s
        self.batch_stall_s = batch_stall_s
        self._ready = False
        self._started = alive_while_starting
        self._last_beat = time.monotonic()
        self._batch_progress: float | None = None  # when the batch in hand last progressed; None: no batch in hand
        self._blocks: dict[str, str] = {}
        self._lock = threading.Lock()
        self.reason = "starting"

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def started(self) -> None:
        self._started = True
        self.beat()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready = ready
        self.reason = reason or ("ready" if ready else "not ready")
        self._publish()

    def block(self, key: str, reason: str) -> None:
        """Not ready while ``key`` is blocked (one entry per cause, cleared by ``unblock``)."""
        with self._lock:
            self._blocks[key] = reason
        self._publish()

    def unblock(self, key: str) -> None:
        with self._lock:
            self._blocks.pop(key, None)
        self._publish()

    def batch_started(self) -> None:
        self._batch_progress = time.monotonic()

    progress = batch_started  # an attempt or a retry of the batch in hand

    def batch_done(self) -> None:
        self._batch_progress = None

    def _publish(self) -> None:
        READY.labels(self.stage).set(1 if self.ready else 0)

    @property
    def liveness(self) -> tuple[bool, str]:
        """(alive, why not)."""
        now = time.monotonic()
        if not self._started:
            return False, "starting"
        if now - self._last_beat >= self.stall_after_s:
            return False, f"main loop stalled for {now - self._last_beat:.0f}s"
        batch = self._batch_progress
        if self.batch_stall_s is not None and batch is not None and now - batch >= self.batch_stall_s:
            return False, f"batch in hand for {now - batch:.0f}s without progress"
        return True, "ok"

    @property
    def alive(self) -> bool:
        return self.liveness[0]

    @property
    def ready(self) -> bool:
        return self._ready and not self._blocks and self.alive

    @property
    def readiness(self) -> tuple[bool, str]:
        """(ready, why not)."""
        alive, why = self.liveness
        if not alive:
            return False, why
        with self._lock:
            blocks = "; ".join(self._blocks.values())
        if not self._ready or blocks:
            return False, self.reason if not self._ready else blocks
        return True, self.reason


def serve_health(health: Health, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the endpoints in a daemon thread; returns the server (``server.server_port`` is the bound port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path == "/metrics":
                self._reply(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                ok, why = health.liveness
                self._reply(200 if ok else 503, f"{why}\n".encode())
            elif self.path == "/readyz":
                ok, why = health.readiness
                self._reply(200 if ok else 503, f"{why}\n".encode())
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
