"""The ingest service: an input adapter that turns cameras into FrameEvents.

Many cameras per process, each a ``CameraWorker`` (``ingest.camera``) with its
own threads, bounded queue and state machine, so a dead or corrupt source
stops only itself: it reports the error (log, metrics, report) while the
others go on. Recordings end; live sources reconnect with capped exponential
backoff and jitter until the service stops. Recording cameras share one
segment uploader. About once a second the service refreshes its gauges and
writes its cameras' reports to a status file that `vigil status` reads.

Frame ids are derived, not drawn: ``frame_id(run_id, camera, position)``, the
position being the frame's place in its stream (``ingest.camera.frame_position``),
so a rerun of the same recording in the same run (same ``ingest.run_id`` and
``ingest.run_started_at``) publishes the same events again, which the stages
downstream treat as redeliveries (face, embedding and alert ids derive from
them). A frame counts as published once the broker acknowledged it; see
``ingest.camera`` for resending and backpressure. The end report
(``ingest.report_path``) says per camera what was sampled, published and
dropped; it is written owner-only and atomically.

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
import re
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from datetime import datetime, timedelta, timezone
from pathlib import Path

from accountability.audit import AuditLog
from accountability.deployments import DeploymentTable
from ingest.archive import FootageArchive
from ingest.camera import CameraReport, CameraWorker, reads_s3, records
from ingest.recorder import SegmentUploader
from ingest.source import SampledFrame
from runtime.files import write_private
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

__all__ = ["CameraReport", "IngestService", "camera_from_source", "frame_id", "read_status", "status_dir"]

# ``vigil stage ingest`` ends with this when it finished but some cameras failed (a corrupt file, a refused source; its
# report says which): not a crash, so a supervisor does not run it again.
CAMERAS_FAILED_EXIT = 3


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
        # A send the producer accepted is retried by it until acknowledged: an expired batch would wedge kafka-python's
        # idempotent producer on its partition (its sequence never resolves), and retries within one producer are
        # deduplicated by the broker. Refusals (no metadata or buffer room in time) are the cameras' to send again.
        self.producer = EventProducer(self.settings.kafka, client_id="vigil-ingest", delivery_timeout_ms=2**31 - 1,
                                      max_block_ms=int(ingest.send_timeout_s * 1000))
        self.deployments = None if ingest.publish_outside_deployments else DeploymentTable(self.settings).start()
        uploader = audit = None
        try:
            if recording:
                audit = AuditLog(self.settings, client_id="vigil-ingest-retention")
                uploader = SegmentUploader(FootageArchive(self._store), recording,
                                           retention=timedelta(hours=ingest.footage_retention_h),
                                           retention_interval_s=ingest.retention_interval_s, audit=audit).start()
            self.workers = {c.id: CameraWorker(c, ingest, publisher=self, stop=self._stop, store=self._store,
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
            try:  # the cameras waited for their sends; this only bounds what a stop left in flight
                self.producer.flush(timeout_s=ingest.send_timeout_s)
            except Exception as exc:  # noqa: BLE001 - counted as unacknowledged by the cameras already
                log.warning("frames still unacknowledged at the end: %s", exc)
            self.producer.close(timeout_s=5)
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

    # -- the cameras' publisher (ingest.camera.Publisher) ------------------------------------------
    def prepare(self, camera_id: str, frame: SampledFrame, position: str) -> FrameEvent | None:
        """``frame``'s event; None when no active deployment covers it (and ``publish_outside_deployments`` is off)."""
        if self.deployments is not None and not self.deployments.covering(camera_id, frame.source_ts, self.run_id):
            return None
        height, width = frame.image.shape[:2]
        jpeg = encode_jpeg(frame.image, self.settings.ingest.jpeg_quality)
        event_id = frame_id(self.run_id, camera_id, position)
        image = {"image_jpeg": jpeg}
        if self.settings.ingest.frame_transport == "s3":  # claim-check: the frame goes to S3, its key into the event
            key = f"{camera_id}/{frame.source_ts:%Y/%m/%d/%H}/{event_id}.jpg"
            self._store.put_bytes(self.settings.s3.frames_bucket, key, jpeg, "image/jpeg")
            image = {"image_key": key}
        return FrameEvent(
            event_id=event_id, camera_id=camera_id, source_ts=frame.source_ts, trace_id=event_id, run_id=self.run_id,
            frame_index=frame.index, width=width, height=height, **image,
        )

    def send(self, event: FrameEvent) -> Future:
        done: Future = Future()
        sent = self.producer.send(FRAMES, event)
        sent.add_callback(done.set_result)
        sent.add_errback(done.set_exception)
        return done

    def _write_report(self) -> None:
        """Each camera's end report as JSON at ``ingest.report_path``, for the operator that started this process."""
        path = self.settings.ingest.report_path
        if path is not None:
            write_private(path, json.dumps({cid: vars(report) for cid, report in self.reports.items()}, indent=2, default=str))

    def _write_status(self, *, running: bool) -> None:
        status = {
            "pid": os.getpid(), "host": socket.gethostname(), "run_id": self.run_id, "running": running,
            "started_at": self.started_at.isoformat(), "updated_at": datetime.now(timezone.utc).isoformat(),
            "health_port": self.health_port,
            "cameras": {cid: vars(worker.refresh()) for cid, worker in self.workers.items()},
        }
        try:
            write_private(self.status_path, json.dumps(status, indent=1, default=str))
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


_FRAME_IDS = uuid.UUID("5d1c7f0e-8a4b-4f55-9a51-0c6e2b7d9f31")  # namespace of derived frame ids


def frame_id(run_id: str | None, camera_id: str, position: str) -> str:
    """A frame's event id (and trace id): the same run, camera and stream position always give the same one."""
    return uuid.uuid5(_FRAME_IDS, f"{run_id or ''}|{camera_id}|{position}").hex


def camera_from_source(source: str) -> CameraSettings:
    """``ID=URL`` names the camera (an unsafe id is refused); a bare path or URL gets an id made from its file stem:
    characters a camera id may not hold become '-', as do runs of dots (``schemas.events.check_camera_id``)."""
    if "=" in source and "://" not in source.split("=", 1)[0]:
        camera_id, url = source.split("=", 1)
    else:
        url = source
        stem = Path(source.split("?")[0].rstrip("/")).stem
        camera_id = re.sub(r"\.\.+", "-", re.sub(r"[^A-Za-z0-9_.:@-]", "-", stem))
        camera_id = camera_id.lstrip(".:@-")[:128] or "camera"  # an id starts with a letter, digit or _
    return CameraSettings(id=camera_id, url=url)
