"""Footage recording: a camera's packets remuxed (never re-encoded) into rolling MP4 segments, uploaded to S3.

``SegmentRecorder`` is an opened source's packet sink (``FrameSampler.packet_sink``):
it copies the compressed packets into a local MP4 and cuts a new one at the
first keyframe once ``segment_s`` is reached, so every segment starts with a
keyframe and plays alone. A segment's times come from the sampler's clock
(``wallclock_at``), the one the published frames are stamped with: its start
as the segment opens, its end as it closes (a live clock that switches to
the camera's RTCP clock mid-segment stretches that segment, not the next). A time
step backwards (a camera restart) also cuts; recording errors lose at most
the segment in hand and never touch frame publishing.

``SegmentUploader`` is one thread per ingest process: it uploads finished
segments through ``FootageArchive`` (retrying an unreachable S3 a few times),
deletes the local files, and enforces footage retention for every camera in
the footage bucket, those no longer configured included (audited with counts).
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import av
from prometheus_client import Counter

from accountability.actors import service_actor
from accountability.audit import AuditLog, AuditUnavailable
from ingest.archive import FootageArchive
from ingest.source import FrameSampler
from storage.objects import StorageError

log = logging.getLogger(__name__)

SEGMENTS = Counter("vigil_footage_segments_total", "Footage segments uploaded.", ["camera"])
SEGMENT_FAILURES = Counter("vigil_footage_segment_failures_total",
                           "Footage segments lost, by reason (mux, clock, upload, queue_full).", ["camera", "reason"])
RETENTION_DELETED = Counter("vigil_footage_retention_deleted_total", "Footage segments deleted by retention.")


@dataclass(frozen=True)
class FinishedSegment:
    camera_id: str
    path: Path
    start: datetime
    end: datetime
    packets: int


class SegmentRecorder:
    def __init__(self, camera_id: str, sampler: FrameSampler, *, segment_s: float, workdir: Path,
                 on_segment: Callable[[FinishedSegment], None]):
        self.camera_id = camera_id
        self.sampler = sampler
        self.segment_s = segment_s
        self.workdir = workdir
        self.on_segment = on_segment
        self._template = sampler.video_stream
        self._tb = self._template.time_base
        self._out: av.container.OutputContainer | None = None
        self._out_stream = None
        self._path: Path | None = None
        self._first_pts = 0
        self._end_pts = 0
        self._start_ts: datetime | None = None
        self._last_dts: int | None = None
        self._step = 0  # the last DTS step: the duration of a packet that gives none
        self._packets = 0
        self._count = 0

    def write(self, packet: av.Packet) -> None:
        """Add one demuxed packet (already decoded by the sampler: it is rebased here)."""
        pts = packet.pts
        dts = packet.dts if packet.dts is not None else pts  # RTP gives no DTS; without B-frames it equals the PTS
        if pts is None or dts is None:
            return
        try:
            if self._out is not None and self._last_dts is not None and dts <= self._last_dts:
                log.info("camera %s: stream time went back; starting a new segment", self.camera_id)
                self._finish()
            if self._out is None:
                if not packet.is_keyframe:
                    return  # a segment must start with a keyframe
                self._start(pts)
            elif packet.is_keyframe and float((pts - self._first_pts) * self._tb) >= self.segment_s:
                self._finish()
                self._start(pts)
            if self._last_dts is not None and dts > self._last_dts:
                self._step = dts - self._last_dts
            self._end_pts = max(self._end_pts, pts + (packet.duration or self._step))  # RTP packets have no duration
            self._last_dts = dts
            packet.pts, packet.dts = pts - self._first_pts, dts - self._first_pts
            packet.stream = self._out_stream
            self._out.mux(packet)
            self._packets += 1
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            log.warning("camera %s: recording dropped a segment (%s: %s)", self.camera_id, type(exc).__name__, exc)
            SEGMENT_FAILURES.labels(self.camera_id, "mux").inc()
            self._discard()

    def close(self) -> None:
        """Finish the segment in hand (the source ended or was closed)."""
        try:
            self._finish()
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            log.warning("camera %s: could not finish the last segment (%s)", self.camera_id, exc)
            SEGMENT_FAILURES.labels(self.camera_id, "mux").inc()
            self._discard()

    def _start(self, pts: int) -> None:
        self._count += 1
        self._path = self.workdir / f"{self.camera_id}-{id(self):x}-{self._count}.mp4"
        self._out = av.open(str(self._path), "w", format="mp4", options={"movflags": "+faststart"})
        self._out_stream = self._out.add_stream_from_template(self._template)
        self._first_pts = self._end_pts = pts
        # The start on the clock in force now: a live clock may change mapping later (RTCP arrives), and the
        # frames around this moment were stamped with this one. None before the clock is known.
        self._start_ts = self.sampler.wallclock_at(pts)
        self._last_dts = None
        self._packets = 0

    def _finish(self) -> None:
        out, path = self._out, self._path
        if out is None:
            return
        self._out = None
        out.close()
        if self._end_pts == self._first_pts:  # padding: close() mends a duration-less last packet
            self._end_pts = self._first_pts + 1
        start = self._start_ts or self.sampler.wallclock_at(self._first_pts)
        end = self.sampler.wallclock_at(self._end_pts)
        if start is None or end is None or end <= start or self._packets == 0:
            log.warning("camera %s: dropped a segment whose capture time is unknown", self.camera_id)
            SEGMENT_FAILURES.labels(self.camera_id, "clock").inc()
            path.unlink(missing_ok=True)
            return
        self.on_segment(FinishedSegment(self.camera_id, path, start, end, self._packets))

    def _discard(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            try:
                out.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away
                pass
        if self._path is not None:
            self._path.unlink(missing_ok=True)


class SegmentUploader:
    """Uploads finished segments from every recording camera of one ingest process; enforces retention."""

    def __init__(self, archive: FootageArchive, camera_ids: list[str], *, retention: timedelta,
                 retention_interval_s: float, audit: AuditLog, max_pending: int = 64, upload_attempts: int = 3):
        self.archive = archive
        self.audit = audit
        self.camera_ids = camera_ids
        self.retention = retention
        self.retention_interval_s = retention_interval_s
        self.upload_attempts = upload_attempts
        self.workdir = Path(tempfile.mkdtemp(prefix="vigil-segments-"))
        self.uploaded: dict[str, int] = {c: 0 for c in camera_ids}
        self._queue: queue.Queue[FinishedSegment | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="footage-uploader", daemon=True)
        self._next_retention = 0.0

    def start(self) -> "SegmentUploader":
        self._thread.start()
        return self

    def submit(self, segment: FinishedSegment) -> None:
        """Queue a segment for upload (called from camera threads); a full queue loses it, counted."""
        try:
            self._queue.put_nowait(segment)
        except queue.Full:
            log.error("camera %s: footage upload queue full; segment %s lost", segment.camera_id, segment.start)
            SEGMENT_FAILURES.labels(segment.camera_id, "queue_full").inc()
            segment.path.unlink(missing_ok=True)

    def close(self, timeout_s: float = 60) -> None:
        """Upload what is queued, then stop and remove the local folder."""
        self._queue.put(None)
        self._thread.join(timeout_s)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _run(self) -> None:
        while True:
            try:
                segment = self._queue.get(timeout=1.0)
            except queue.Empty:
                segment = False
            if segment is None:
                return
            if segment:
                self._upload(segment)
            if time.monotonic() >= self._next_retention:
                self._next_retention = time.monotonic() + self.retention_interval_s
                try:
                    RETENTION_DELETED.inc(self.archive.enforce_retention(self.retention, audit=self.audit,
                                                                         actor=service_actor("ingest")))
                except (StorageError, AuditUnavailable) as exc:
                    log.warning("footage retention skipped this round: %s", exc)

    def _upload(self, segment: FinishedSegment) -> None:
        try:
            for attempt in range(1, self.upload_attempts + 1):
                try:
                    self.archive.put(segment.camera_id, segment.start, segment.end, segment.path, frames=segment.packets)
                    SEGMENTS.labels(segment.camera_id).inc()
                    self.uploaded[segment.camera_id] = self.uploaded.get(segment.camera_id, 0) + 1
                    return
                except StorageError as exc:
                    log.warning("camera %s: segment upload failed (attempt %d/%d): %s",
                                segment.camera_id, attempt, self.upload_attempts, exc)
                    time.sleep(min(2.0 ** attempt, 10.0))
            SEGMENT_FAILURES.labels(segment.camera_id, "upload").inc()
        finally:
            segment.path.unlink(missing_ok=True)
