"""The ingest service: an input adapter that turns cameras into FrameEvents.

Many cameras per process, each a ``CameraWorker`` (``ingest.camera``) with its
own threads, bounded queue and state machine, so a dead or corrupt source
stops only itself: it reports the error (log, metrics, report) while the
others go on. Recordings end; live sources reconnect with capped exponential
backoff and jitter until the service stops. Recording cameras share one
segment uploader. About once a second the service refreshes its gauges and
writes its cameras' reports to a status file that `vigil status` reads.

A frame is published only when an active deployment covers its camera,
capture time and run (``accountability.deployments``); others are dropped and
counted (``vigil_camera_dropped_frames_total{reason="outside_deployment"}``),
unless ``ingest.publish_outside_deployments``. Footage is recorded either way:
it has its own retention.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from accountability.audit import AuditLog
from accountability.deployments import DeploymentTable
from ingest.archive import FootageArchive
from ingest.camera import CameraReport, CameraWorker, reads_s3, records
from ingest.recorder import SegmentUploader
from ingest.source import SampledFrame
from runtime import metrics
from runtime.health import Health, serve_health
from runtime.imaging import encode_jpeg
from runtime.kafka import EventProducer, ensure_topics
from runtime.logs import configure_logging
from runtime.settings import CameraSettings, IngestSettings, VigilSettings, vigil_home
from schemas.events import FrameEvent
from schemas.stages import INGEST
from schemas.topics import FRAMES
from storage.objects import ObjectStore

log = logging.getLogger(__name__)

STAGE = INGEST.name
STATUS_EVERY_S = 1.0
STATUS_STALE_S = 10.0  # a running process whose file is older than this is presumed dead
STATUS_KEEP_S = 24 * 3600.0  # finished processes' files are pruned after this

__all__ = ["CameraReport", "IngestService", "camera_from_source", "read_status", "status_dir"]


class IngestService:
    def __init__(self, settings: VigilSettings, cameras: list[CameraSettings] | None = None, *, run_id: str | None = None):
        self.settings = settings
        self.cameras = cameras if cameras is not None else settings.ingest.cameras
        if not self.cameras:
            raise ValueError("ingest has no cameras: set ingest.cameras (VIGIL_INGEST__CAMERAS) or pass sources")
        ids = [c.id for c in self.cameras]
        if len(set(ids)) != len(ids):
            raise ValueError(f"camera ids must be unique, got {ids}")
        self.run_id = run_id if run_id is not None else settings.ingest.run_id
        self.health = Health(STAGE)
        self._stop = threading.Event()
        self._store: ObjectStore | None = None  # claim-check frames, s3:// and footage:// sources, recording
        self.workers: dict[str, CameraWorker] = {}
        self.reports: dict[str, CameraReport] = {}
        self.server = None
        self.started_at = datetime.now(timezone.utc)
        self._status_failed = False
        self.status_path = status_dir(settings.ingest) / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}.json"

    def stop(self, *_args) -> None:
        self._stop.set()

    def run(self) -> dict[str, CameraReport]:
        """Publish frames until every camera has ended or failed (or stop/SIGTERM); returns a report per camera."""
        stage, ingest = self.settings.stage, self.settings.ingest
        configure_logging(STAGE, stage.log_level, stage.log_format)
        ensure_topics(self.settings.kafka)
        self.server = serve_health(self.health, stage.health_port)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        recording = [c.id for c in self.cameras if records(c, ingest)]
        if ingest.frame_transport == "s3" or recording or any(reads_s3(c.url) for c in self.cameras):
            self._store = ObjectStore(self.settings.s3)
            self._store.ensure_buckets()
        self.producer = EventProducer(self.settings.kafka, client_id="vigil-ingest")
        self.deployments = None if ingest.publish_outside_deployments else DeploymentTable(self.settings).start()
        uploader = audit = None
        try:
            if recording:
                audit = AuditLog(self.settings, client_id="vigil-ingest-retention")
                uploader = SegmentUploader(FootageArchive(self._store), recording,
                                           retention=timedelta(hours=ingest.footage_retention_h),
                                           retention_interval_s=ingest.retention_interval_s, audit=audit).start()
            self.workers = {c.id: CameraWorker(c, ingest, publish=self._publish, stop=self._stop, store=self._store,
                                               uploader=uploader) for c in self.cameras}
            self.reports = {cid: worker.report for cid, worker in self.workers.items()}
            self.health.set_ready(True)
            for worker in self.workers.values():
                worker.start()
            next_status = 0.0
            while any(w.alive for w in self.workers.values()):
                self.health.beat()
                if time.monotonic() >= next_status:
                    self._write_status(running=True)
                    next_status = time.monotonic() + STATUS_EVERY_S
                time.sleep(0.1)
        finally:
            self.producer.flush()
            self.producer.close()
            if uploader is not None:
                uploader.close()
            if audit is not None:
                audit.close()
            if self.deployments is not None:
                self.deployments.stop()
            self._write_status(running=False)
            self._write_report()
            self.server.shutdown()
        return self.reports

    @property
    def health_port(self) -> int | None:
        return self.server.server_port if self.server is not None else None

    def _publish(self, camera_id: str, frame: SampledFrame) -> bool:
        """Publish ``frame``; False when no active deployment covers it (and ``publish_outside_deployments`` is off)."""
        if self.deployments is not None and not self.deployments.covering(camera_id, frame.source_ts, self.run_id):
            return False
        height, width = frame.image.shape[:2]
        jpeg = encode_jpeg(frame.image, self.settings.ingest.jpeg_quality)
        event_id = uuid.uuid4().hex
        image = {"image_jpeg": jpeg}
        if self.settings.ingest.frame_transport == "s3":  # claim-check: the frame goes to S3, its key into the event
            key = f"{camera_id}/{frame.source_ts:%Y/%m/%d/%H}/{event_id}.jpg"
            self._store.put_bytes(self.settings.s3.frames_bucket, key, jpeg, "image/jpeg")
            image = {"image_key": key}
        event = FrameEvent(
            event_id=event_id, camera_id=camera_id, source_ts=frame.source_ts, trace_id=event_id, run_id=self.run_id,
            frame_index=frame.index, width=width, height=height, **image,
        )
        self.producer.send(FRAMES, event)
        metrics.EVENTS_OUT.labels(STAGE, FRAMES.name).inc()
        return True

    def _write_report(self) -> None:
        """Each camera's end report as JSON at ``ingest.report_path``, for the operator that started this process."""
        path = self.settings.ingest.report_path
        if path is not None:
            path.write_text(json.dumps({cid: vars(report) for cid, report in self.reports.items()}, indent=2, default=str))

    def _write_status(self, *, running: bool) -> None:
        status = {
            "pid": os.getpid(), "host": socket.gethostname(), "run_id": self.run_id, "running": running,
            "started_at": self.started_at.isoformat(), "updated_at": datetime.now(timezone.utc).isoformat(),
            "health_port": self.health_port,
            "cameras": {cid: vars(worker.refresh()) for cid, worker in self.workers.items()},
        }
        try:
            self.status_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.status_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(status, indent=1, default=str))
            tmp.replace(self.status_path)
        except OSError as exc:  # status is for people; never let it stop ingest (a read-only pod says so once)
            log.log(logging.DEBUG if self._status_failed else logging.WARNING,
                    "could not write the status file %s: %s", self.status_path, exc)
            self._status_failed = True


def status_dir(settings: IngestSettings) -> Path:
    return settings.status_dir or vigil_home() / "ingest"


def read_status(settings: IngestSettings, *, now: datetime | None = None) -> list[dict]:
    """Every ingest process's last status (newest first), each with ``stale`` set when it stopped
    updating while claiming to run; files of processes finished more than a day ago are removed."""
    now = now or datetime.now(timezone.utc)
    found = []
    for path in sorted(status_dir(settings).glob("*.json")):
        try:
            status = json.loads(path.read_text())
            age = (now - datetime.fromisoformat(status["updated_at"])).total_seconds()
        except (OSError, ValueError, KeyError):
            continue
        if age > STATUS_KEEP_S:
            path.unlink(missing_ok=True)
            continue
        status["stale"] = bool(status.get("running")) and age > STATUS_STALE_S
        found.append(status)
    return sorted(found, key=lambda s: s["updated_at"], reverse=True)


def camera_from_source(source: str) -> CameraSettings:
    """``ID=URL`` names the camera; a bare path or URL gets its file stem as id."""
    if "=" in source and "://" not in source.split("=", 1)[0]:
        camera_id, url = source.split("=", 1)
    else:
        url = source
        camera_id = Path(source.split("?")[0].rstrip("/")).stem or "camera"
    return CameraSettings(id=camera_id, url=url)
