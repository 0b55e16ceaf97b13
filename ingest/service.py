"""The ingest service: an input adapter that turns cameras into FrameEvents.

Each camera runs in its own thread, so a dead or corrupt source stops only
itself: it reports the error (log, metrics, summary) while the others go on.
File sources end; live sources (rtsp, http) reconnect with capped
exponential backoff and jitter until the service stops.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Counter, Gauge

from ingest.source import SourceError, is_live, sample_frames
from runtime import health as metrics
from runtime.health import Health, serve_health
from runtime.imaging import encode_jpeg
from runtime.kafka import EventProducer, ensure_topics
from runtime.logs import configure_logging
from runtime.settings import CameraSettings, VigilSettings
from schemas.events import FrameEvent
from schemas.topics import FRAMES
from storage.objects import ObjectStore

log = logging.getLogger(__name__)

CAMERA_UP = Gauge("vigil_camera_up", "1 while a camera is streaming.", ["camera"])
CAMERA_ERRORS = Counter("vigil_camera_errors_total", "Source errors per camera.", ["camera"])
CAMERA_FRAMES = Counter("vigil_camera_frames_total", "Frames published per camera.", ["camera"])

STAGE = "ingest"


@dataclass
class CameraReport:
    camera_id: str
    url: str
    frames: int = 0
    errors: list[str] = field(default_factory=list)
    state: str = "pending"


class IngestService:
    def __init__(self, settings: VigilSettings, cameras: list[CameraSettings] | None = None, *, run_id: str | None = None):
        self.settings = settings
        self.cameras = cameras if cameras is not None else settings.ingest.cameras
        if not self.cameras:
            raise ValueError("ingest has no cameras: set ingest.cameras (VIGIL_INGEST__CAMERAS) or pass sources")
        self.run_id = run_id
        self.health = Health(STAGE)
        self._stop = threading.Event()
        self.reports = {c.id: CameraReport(c.id, c.url) for c in self.cameras}
        self._store: ObjectStore | None = None

    def stop(self, *_args) -> None:
        self._stop.set()

    def run(self) -> dict[str, CameraReport]:
        """Publish frames until every file source has ended (or SIGTERM); returns a report per camera."""
        stage = self.settings.stage
        configure_logging(STAGE, stage.log_level, stage.log_format)
        ensure_topics(self.settings.kafka)
        server = serve_health(self.health, stage.health_port)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        if self.settings.ingest.frame_transport == "s3":
            self._store = ObjectStore(self.settings.s3)
            self._store.ensure_buckets()
        self.producer = EventProducer(self.settings.kafka, client_id="vigil-ingest")
        self.health.set_ready(True)
        threads = [threading.Thread(target=self._run_camera, args=(camera,), name=f"camera-{camera.id}", daemon=True) for camera in self.cameras]
        for thread in threads:
            thread.start()
        try:
            while any(t.is_alive() for t in threads):
                self.health.beat()
                time.sleep(0.5)
        finally:
            self.producer.flush()
            self.producer.close()
            server.shutdown()
        return self.reports

    def _run_camera(self, camera: CameraSettings) -> None:
        report = self.reports[camera.id]
        live = is_live(camera.url)
        backoff = 1.0
        while not self._stop.is_set():
            report.state = "connecting"
            try:
                for frame in sample_frames(
                    camera.url, camera.target_fps or self.settings.ingest.target_fps,
                    max_width=self.settings.ingest.max_width, realtime=self.settings.ingest.realtime,
                ):
                    if self._stop.is_set():
                        break
                    report.state = "streaming"
                    CAMERA_UP.labels(camera.id).set(1)
                    self._publish(camera.id, frame)
                    report.frames += 1
                    backoff = 1.0
                report.state = "ended"
            except SourceError as exc:
                report.errors.append(str(exc))
                report.state = "failed"
                CAMERA_ERRORS.labels(camera.id).inc()
                log.error("camera %s: %s", camera.id, exc, extra={"camera": camera.id})
            finally:
                CAMERA_UP.labels(camera.id).set(0)
            if not live:
                return
            report.state = "reconnecting"
            delay = backoff * random.uniform(0.8, 1.2)
            log.warning("camera %s: reconnecting in %.1fs", camera.id, delay, extra={"camera": camera.id})
            self._stop.wait(delay)
            backoff = min(backoff * 2, 30.0)

    def _publish(self, camera_id: str, frame) -> None:
        height, width = frame.image.shape[:2]
        jpeg = encode_jpeg(frame.image, self.settings.ingest.jpeg_quality)
        event_id = uuid.uuid4().hex
        image = {"image_jpeg": jpeg}
        if self._store is not None:  # claim-check: the frame goes to S3, its key into the event
            key = f"{camera_id}/{frame.source_ts:%Y/%m/%d/%H}/{event_id}.jpg"
            self._store.put_bytes(self.settings.s3.frames_bucket, key, jpeg, "image/jpeg")
            image = {"image_key": key}
        event = FrameEvent(
            event_id=event_id, camera_id=camera_id, source_ts=frame.source_ts, trace_id=event_id, run_id=self.run_id,
            frame_index=frame.index, width=width, height=height, **image,
        )
        self.producer.send(FRAMES, event)
        metrics.EVENTS_OUT.labels(STAGE, FRAMES.name).inc()
        CAMERA_FRAMES.labels(camera_id).inc()


def camera_from_source(source: str) -> CameraSettings:
    """``ID=URL`` names the camera; a bare path or URL gets its file stem as id."""
    if "=" in source and "://" not in source.split("=", 1)[0]:
        camera_id, url = source.split("=", 1)
    else:
        url = source
        camera_id = Path(source.split("?")[0].rstrip("/")).stem or "camera"
    return CameraSettings(id=camera_id, url=url)
