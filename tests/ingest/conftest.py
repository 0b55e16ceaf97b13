"""Fixtures of the ingest tests: live RTSP cameras (GStreamer), a broker of their own, settings, a service in a thread.

The ingest tests publish hundreds of frames. They do it on a Kafka-protocol
broker of their own (Tansu, as in the session stack) rather than on the
session's: a backlog on the session's frames topic would be read by the
detect consumer group of every later test that runs the pipeline. S3 and
Milvus are the session's.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.service import IngestService
from runtime.kafka import EventReader
from runtime.settings import IngestSettings, KafkaSettings, VigilSettings
from schemas.events import FrameEvent
from schemas.topics import FRAMES

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, every_s: float = 0.05):
    """Poll until ``predicate()`` is truthy; return its value or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(every_s)


def _rtsp_unavailable() -> str | None:
    """Why GStreamer's RTSP server cannot run here, or None when it can."""
    python = shutil.which("python3", path=os.path.dirname(SYSTEM_PYTHON))
    if python is None or os.path.realpath(python) == os.path.realpath(sys.executable):
        return f"no system {SYSTEM_PYTHON} beside the venv"
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return ("GStreamer's RTSP server is not installed (scripts/setup.sh installs it with apt-get as root; "
                f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'import failed'})")
    return None


RTSP_UNAVAILABLE = _rtsp_unavailable()
needs_rtsp = pytest.mark.skipif(RTSP_UNAVAILABLE is not None, reason=f"needs a GStreamer RTSP server: {RTSP_UNAVAILABLE}")


class RtspCamera:
    """One RTSP server process that can be killed and started again on the same port."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self, timeout_s: float = 15) -> "RtspCamera":
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(RTSP_SERVER), str(self.port)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline().strip() if ready else ""
        if line != "ready":
            self.kill()
            raise RuntimeError(f"RTSP server did not start on port {self.port}: {line!r}")
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)


@pytest.fixture
def rtsp_camera():
    """Factory of started RTSP cameras; all are killed after the test."""
    cameras: list[RtspCamera] = []

    def start() -> RtspCamera:
        camera = RtspCamera()
        cameras.append(camera)
        return camera.start()

    yield start
    for camera in cameras:
        camera.kill()


@contextlib.contextmanager
def tansu_broker(log_dir: Path, *, processes: list[subprocess.Popen] | None = None) -> Iterator[KafkaSettings]:
    """A fresh, empty Tansu broker (the one ``vigil up`` runs) for the block; its process is appended to ``processes``
    (to pause it with SIGSTOP/SIGCONT, or kill it)."""
    from localstack.stack import Kafka

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with open(log_dir / f"tansu-{port}.log", "wb") as log:
        process = subprocess.Popen([Kafka.binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                                    "--storage-engine", "memory://tansu/"], stdout=log, stderr=subprocess.STDOUT)
        if processes is not None:
            processes.append(process)
        try:
            def listening() -> bool:
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", port)) == 0

            wait_for(listening, 10, "a Tansu broker")
            yield KafkaSettings(bootstrap=f"127.0.0.1:{port}", session_timeout_s=6.0, heartbeat_interval_s=2.0)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a paused broker would not see the SIGTERM
                process.terminate()
            process.wait(10)


def tansu_available() -> bool:
    try:
        from localstack.stack import Kafka

        Kafka.binary()
        return True
    except Exception:  # noqa: BLE001 - not installed
        return False


@pytest.fixture(scope="session")
def ingest_kafka(stack, tmp_path_factory) -> Iterator[KafkaSettings]:
    """The ingest tests' own broker (the session's where Tansu is not installed)."""
    if not tansu_available():
        yield stack.settings.kafka
        return
    with tansu_broker(tmp_path_factory.mktemp("ingest-kafka")) as kafka:
        yield kafka


@pytest.fixture
def ingest_settings(stack, ingest_kafka, tmp_path) -> VigilSettings:
    """The session's S3 and Milvus, the ingest broker, a free health port, short timeouts and backoff; frames published
    whatever the deployments (these tests are about cameras: tests/ingest/test_deployments.py is about the gate)."""
    base = stack.settings
    ingest = IngestSettings(status_dir=tmp_path / "status", timeout_s=2.0, reconnect_initial_s=0.5, reconnect_max_s=2.0,
                            publish_outside_deployments=True)
    return base.model_copy(update={"kafka": ingest_kafka, "ingest": ingest,
                                   "stage": base.stage.model_copy(update={"health_port": 0, "log_format": "text"})})


def with_ingest(settings: VigilSettings, **changes) -> VigilSettings:
    return settings.model_copy(update={"ingest": settings.ingest.model_copy(update=changes)})


def published(settings, camera_ids) -> dict[str, list[FrameEvent]]:
    """The frames on the topic from these cameras, in order."""
    out: dict[str, list[FrameEvent]] = {c: [] for c in camera_ids}
    with EventReader(settings.kafka, FRAMES) as reader:
        for read in reader.follow(idle_timeout_s=2):
            if isinstance(read.event, FrameEvent) and read.event.camera_id in out:
                out[read.event.camera_id].append(read.event)
    return out


class ServiceThread:
    """``IngestService.run`` in a thread: ``with ServiceThread(service) as svc: ...``; stops it on exit."""

    def __init__(self, service: IngestService):
        self.service = service
        self.result = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ingest-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.service.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            self.error = exc

    def __enter__(self) -> "ServiceThread":
        self.thread.start()
        wait_for(lambda: self.service.workers or self.error, 60, "ingest to start its cameras")
        if self.error:
            raise self.error
        return self

    def join(self, timeout_s: float = 60) -> dict:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "ingest did not stop"
        if self.error:
            raise self.error
        return self.result

    def __exit__(self, *exc) -> None:
        self.service.stop()
        self.thread.join(30)

    def report(self, camera_id: str):
        return self.service.workers[camera_id].report

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.service.health_port}/metrics", timeout=5) as reply:
            return reply.read().decode()
