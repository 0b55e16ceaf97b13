"""One camera: its reader thread (source -> bounded queue), its publisher thread (queue -> publish), its state.

The reader resolves the camera's URL into parts (one for a file or a stream;
the recorded segments of a window for ``footage://``; a presigned GET for
``s3://``), decodes and samples each (``ingest.source``), optionally records
its packets (``ingest.recorder``), and puts sampled frames into a
``FrameQueue`` whose policy depends on whether the source is live. The
state machine (``ingest.state``) says where the camera is; every change,
drop and error shows in the metrics below and in ``report``.

Each frame gets its position in the stream (``frame_position``), from which
the service derives its event id: a recording's frames by their clock anchor
and decoded-frame index, a live camera's by capture time.

The publisher takes frames off the queue, has the service ``prepare`` each
(its event, or None when no deployment covers it) and ``send`` it, keeping
up to ``ingest.max_unacked_frames`` sends in flight. A frame counts as
published only once the broker acknowledged it. The producer retries a send
it accepted until the broker acknowledges it (idempotent: a repeat the
broker already has is dropped there), however long the outage; a send it
refuses or fails (no metadata or buffer room within
``ingest.send_timeout_s``, an error) is sent again by the camera, same
event, after a capped, growing wait. Either way the publisher takes nothing
new while its oldest send is unacknowledged and its window full: a
recording's queue fills and its decoding waits (nothing is lost), a live
camera's queue drops its oldest frames (counted, ``backpressure``). Only a
stop gives up, ``ingest.send_timeout_s`` after it, on frames still
unacknowledged, counted as dropped (``unacknowledged``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from prometheus_client import Counter, Gauge

from ingest.archive import FOOTAGE_SCHEME, FootageArchive, parse_footage_url, presigned_url, split_s3_url
from ingest.buffer import FrameQueue
from ingest.recorder import SegmentRecorder, SegmentUploader
from ingest.source import SampledFrame, SourceError, is_live, redact_url, sample_frames
from ingest.state import Backoff, CameraState, StateMachine
from runtime import metrics
from runtime.settings import CameraSettings, IngestSettings
from schemas.events import FrameEvent
from schemas.stages import INGEST
from schemas.topics import FRAMES
from storage.objects import ObjectStore, StorageError

log = logging.getLogger(__name__)

CAMERA_UP = Gauge("vigil_camera_up", "1 while a camera is streaming.", ["camera"])
CAMERA_STATE = Gauge("vigil_camera_state", "1 for the camera's current state, 0 for the others.", ["camera", "state"])
CAMERA_FRAMES = Counter("vigil_camera_frames_total", "Frames published per camera (acknowledged by the broker).", ["camera"])
CAMERA_FPS = Gauge("vigil_camera_fps", "Frames published per second over the last few seconds.", ["camera"])
CAMERA_DROPPED = Counter("vigil_camera_dropped_frames_total",
                         "Sampled frames not published, by reason: backpressure (queue full, drop_oldest), "
                         "late (released out of order by the decoder), publish_error (the frame could not be prepared), "
                         "outside_deployment (no active deployment covers the camera), unacknowledged (ingest stopped "
                         "before the broker acknowledged it).", ["camera", "reason"])
CAMERA_RESENDS = Counter("vigil_camera_resends_total", "Frames sent again because the broker did not acknowledge a send.", ["camera"])
CAMERA_UNACKED = Gauge("vigil_camera_unacked_frames", "Frames sent and not yet acknowledged by the broker.", ["camera"])
CAMERA_ERRORS = Counter("vigil_camera_errors_total", "Source errors per camera.", ["camera"])
CAMERA_DECODE_ERRORS = Counter("vigil_camera_decode_errors_total", "Packets that failed to decode and were skipped.", ["camera"])
CAMERA_LAST_ERROR = Gauge("vigil_camera_last_error_info", "1, labelled with the camera's last error.", ["camera", "error"])
CAMERA_RECONNECTS = Counter("vigil_camera_reconnects_total", "Reconnection attempts of live cameras.", ["camera"])
CAMERA_OUTAGES = Counter("vigil_camera_outages_total", "Times a streaming camera was lost.", ["camera"])
CAMERA_OUTAGE_SECONDS = Gauge("vigil_camera_outage_seconds", "Seconds spent in outages so far, the current one included.", ["camera"])
CAMERA_LAST_FRAME = Gauge("vigil_camera_last_frame_timestamp_seconds", "Wall-clock time the last frame was published.", ["camera"])
CAMERA_QUEUE = Gauge("vigil_camera_queue_frames", "Frames waiting in the camera's queue.", ["camera"])

FPS_WINDOW_S = 5.0
_MAX_ERRORS_KEPT = 20
_SETTLE_EVERY_S = 0.2  # how often an idle publisher looks at its sends in flight
DROP_REASONS = ("backpressure", "late", "publish_error", "outside_deployment", "unacknowledged")


@dataclass
class CameraReport:
    """What a camera did; JSON-ready (``vars(report)``) for `vigil status` and `vigil run`'s report."""

    camera_id: str
    url: str  # credentials masked
    live: bool = False
    state: str = CameraState.CONNECTING.value
    state_since: str = ""
    sampled: int = 0  # frames the sampler gave (after a replay's window)
    frames: int = 0  # published: acknowledged by the broker
    fps: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)  # sampled and not published, by reason
    resends: int = 0  # sends repeated after a failure
    errors: list[str] = field(default_factory=list)  # the most recent ones
    last_error: str | None = None
    decode_errors: int = 0
    reconnects: int = 0
    outages: int = 0
    outage_s: float = 0.0
    last_frame_at: str | None = None
    last_source_ts: str | None = None
    segments: int = 0


@dataclass(frozen=True)
class SourcePart:
    """What one opening reads: the URL FFmpeg opens, the name errors show, clock and window."""

    url: str
    label: str
    start_wallclock: datetime | None = None
    window: tuple[datetime, datetime] | None = None  # only frames with source_ts in [from, to) are published


class Publisher(Protocol):
    """What a camera hands its frames to (the ingest service)."""

    def prepare(self, camera_id: str, frame: SampledFrame, position: str) -> FrameEvent | None:
        """The frame's event (its id derived from ``position``); None when it must not be published."""

    def send(self, event: FrameEvent) -> Future:
        """Send ``event``; the future completes when the broker acknowledged it, or fails."""


def frame_position(frame: SampledFrame, sampler, live: bool) -> str:
    """Where ``frame`` sits in its stream, the same each time the stream is read again (for recordings): a recording's
    clock anchor (the run's start, a footage segment's start) and decoded-frame index; a live frame's capture time."""
    if live:
        return f"t{frame.source_ts.isoformat()}"
    return f"{sampler.anchor.isoformat()}#{frame.index}"


def is_replay(url: str) -> bool:
    """A ``footage://`` source: recorded footage read back."""
    return url.startswith(f"{FOOTAGE_SCHEME}://")


def reads_s3(url: str) -> bool:
    """Whether reading this source needs the object store."""
    return url.startswith("s3://") or is_replay(url)


def records(camera: CameraSettings, settings: IngestSettings) -> bool:
    """Whether the camera's footage is recorded (never that of a replay: it is recorded already)."""
    return bool(camera.record if camera.record is not None else settings.record) and not is_replay(camera.url)


class FpsMeter:
    def __init__(self, window_s: float = FPS_WINDOW_S):
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._times.append(time.monotonic())

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._times and self._times[0] < now - self.window_s:
                self._times.popleft()
            return len(self._times) / self.window_s


class CameraWorker:
    def __init__(self, camera: CameraSettings, settings: IngestSettings, *, publisher: Publisher,
                 stop: threading.Event, store: ObjectStore | None = None, uploader: SegmentUploader | None = None):
        self.camera = camera
        self.settings = settings
        self.publisher = publisher
        self.stop_event = stop
        self.store = store
        self.live = camera.live if camera.live is not None else is_live(camera.url)
        self.replay = is_replay(camera.url)
        self.uploader = uploader if records(camera, settings) else None
        if records(camera, settings) and uploader is None:
            raise ValueError(f"camera {camera.id}: recording needs a segment uploader")
        self.report = CameraReport(camera.id, redact_url(camera.url), live=self.live)
        self.queue: FrameQueue[tuple[SampledFrame, str]] = FrameQueue(
            settings.queue_frames, settings.live_backpressure if self.live else settings.file_backpressure)
        self.backoff = Backoff(settings.reconnect_initial_s, settings.reconnect_max_s, settings.reconnect_jitter,
                               settings.reconnect_max_attempts)
        self.resend_backoff = Backoff(settings.resend_initial_s, settings.resend_max_s)
        self._stop_seen: float | None = None
        self.fps = FpsMeter()
        cid = camera.id
        for state in CameraState:
            CAMERA_STATE.labels(cid, state.value).set(0)
        for reason in DROP_REASONS:
            CAMERA_DROPPED.labels(cid, reason)
        CAMERA_RESENDS.labels(cid)
        CAMERA_RECONNECTS.labels(cid)
        CAMERA_OUTAGES.labels(cid)
        self.machine = StateMachine(on_change=self._on_state)
        self._on_state(None, self.machine.state)
        self._threads = [threading.Thread(target=self._read, name=f"camera-{cid}", daemon=True),
                         threading.Thread(target=self._publish_loop, name=f"publish-{cid}", daemon=True)]

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self, timeout_s: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout_s)

    def refresh(self) -> CameraReport:
        """Update the rate, outage and queue gauges and the report (called about once a second)."""
        cid, report = self.camera.id, self.report
        report.fps = round(self.fps.rate(), 2)
        report.outage_s = round(self.machine.outage_s, 3)
        report.outages = self.machine.outage_count
        if self.uploader is not None:
            report.segments = self.uploader.uploaded.get(cid, 0)
        CAMERA_FPS.labels(cid).set(report.fps)
        CAMERA_OUTAGE_SECONDS.labels(cid).set(report.outage_s)
        CAMERA_QUEUE.labels(cid).set(len(self.queue))
        return report

    # -- reader ------------------------------------------------------------------
    def _read(self) -> None:
        try:
            self._read_loop()
        except Exception as exc:  # a bug must not take the other cameras down: say so and fail this one
            log.exception("camera %s: reader crashed", self.camera.id)
            self._error(f"internal error: {type(exc).__name__}: {exc}")
            if not self.machine.state.final:
                self.machine.to(CameraState.FAILED)
        finally:
            self.queue.close()

    def _read_loop(self) -> None:
        S = CameraState
        while True:
            failed_parts = 0
            try:
                for part in self._parts():
                    if self.stop_event.is_set():
                        break
                    try:
                        self._stream(part)
                    except SourceError as exc:
                        self._error(str(exc))
                        failed_parts += 1
                        if self.live:
                            break
            except SourceError as exc:  # nothing to read (an empty footage window)
                self._error(str(exc))
                failed_parts += 1
            except (StorageError, ValueError) as exc:  # the parts could not be listed or signed
                self._error(str(SourceError(self.camera.url, str(exc))))
                failed_parts += 1
            if self.stop_event.is_set():
                self.machine.to(S.ENDED)
                return
            if not self.live:
                self.machine.to(S.FAILED if failed_parts else S.ENDED)
                return
            if self.backoff.exhausted:
                self._error(f"gave up after {self.backoff.attempt} reconnect attempts")
                self.machine.to(S.FAILED)
                return
            self.machine.to(S.RECONNECTING)
            delay = self.backoff.next_delay()
            log.warning("camera %s: reconnecting in %.2fs (attempt %d)", self.camera.id, delay, self.backoff.attempt,
                        extra={"camera": self.camera.id})
            if self.stop_event.wait(delay):
                self.machine.to(S.ENDED)
                return
            self.machine.to(S.CONNECTING)

    def _parts(self) -> Iterator[SourcePart]:
        url = self.camera.url
        if self.replay:
            camera_id, t1, t2 = parse_footage_url(url)
            archive = FootageArchive(self._store())
            segments = archive.segments(camera_id, t1, t2)
            if not segments:
                raise SourceError(url, f"no recorded footage of camera {camera_id} between {t1.isoformat()} and {t2.isoformat()}")
            for segment in segments:
                yield SourcePart(archive.url(segment), f"s3://{archive.bucket}/{segment.key}", segment.start, (t1, t2))
        elif url.startswith("s3://"):
            bucket, key = split_s3_url(url)
            yield SourcePart(presigned_url(self._store(), bucket, key), url)
        else:
            yield SourcePart(url, url)

    def _store(self) -> ObjectStore:
        if self.store is None:
            raise ValueError("s3:// and footage:// sources need the object store")
        return self.store

    def _stream(self, part: SourcePart) -> None:
        """Read one part to its end (or until stop); raises SourceError named after the part's label."""
        camera, settings = self.camera, self.settings
        try:
            # A recording's clock: its segment's start (replays), else the run's start when set, so a rerun of the
            # run stamps its frames (and derives their ids) as the first time.
            start = part.start_wallclock or (None if self.live else settings.run_started_at)
            sampler = sample_frames(
                part.url, camera.target_fps or settings.target_fps, max_width=settings.max_width,
                max_pixels=settings.max_frame_pixels, realtime=settings.realtime, start_wallclock=start, live=self.live,
                hwaccel=camera.hwaccel if camera.hwaccel is not None else settings.hwaccel, timeout_s=settings.timeout_s,
                rtsp_transport=camera.rtsp_transport or settings.rtsp_transport, keyframes_only=camera.mode == "keyframes",
            )
        except SourceError as exc:
            raise self._renamed(exc, part) from exc
        recorder = None
        if self.uploader is not None:
            recorder = SegmentRecorder(camera.id, sampler, segment_s=settings.segment_s, workdir=self.uploader.workdir,
                                       on_segment=self.uploader.submit)
            sampler.packet_sink = recorder.write
        try:
            for frame in sampler:
                if part.window is not None and not part.window[0] <= frame.source_ts < part.window[1]:
                    continue
                if self.machine.state != CameraState.STREAMING:
                    self.machine.to(CameraState.STREAMING)
                    self.backoff.reset()
                self.report.sampled += 1
                dropped = self.queue.put((frame, frame_position(frame, sampler, self.live)))
                if dropped is not None:
                    self._drop("backpressure")
                if self.stop_event.is_set():
                    break
        except SourceError as exc:
            raise self._renamed(exc, part) from exc
        finally:
            sampler.close()
            if recorder is not None:
                recorder.close()
            self._absorb(sampler)

    @staticmethod
    def _renamed(exc: SourceError, part: SourcePart) -> SourceError:
        """The error named after the part's label (a presigned URL is not for logs)."""
        if part.label == part.url:
            return exc
        return SourceError(part.label, exc.cause, partial=exc.partial, frames_yielded=exc.frames_yielded)

    def _absorb(self, sampler) -> None:
        stats, cid = sampler.stats, self.camera.id
        if stats.late_frames:
            self._drop("late", stats.late_frames)
        if stats.decode_errors:
            self.report.decode_errors += stats.decode_errors
            CAMERA_DECODE_ERRORS.labels(cid).inc(stats.decode_errors)

    # -- publisher ---------------------------------------------------------------
    def _publish_loop(self) -> None:
        in_flight: deque[tuple[SampledFrame, FrameEvent, Future]] = deque()
        try:
            while True:
                item = self.queue.get(_SETTLE_EVERY_S if in_flight else None)
                if item is not None:
                    event = self._prepare(*item)
                    if event is not None:
                        in_flight.append((item[0], event, self._send(event)))
                self._settle(in_flight, full=self.settings.max_unacked_frames)
                if item is None and self.queue.drained:
                    break
            self._settle(in_flight, full=1)
        finally:
            CAMERA_UNACKED.labels(self.camera.id).set(0)

    def _prepare(self, frame: SampledFrame, position: str) -> FrameEvent | None:
        """The frame's event; None (counted) when no deployment covers it or it cannot be prepared."""
        cid = self.camera.id
        while True:
            try:
                event = self.publisher.prepare(cid, frame, position)
                break
            except (StorageError, OSError) as exc:  # the claim-check frame not stored: S3 down?
                self._error(f"could not store a frame: {type(exc).__name__}: {exc}")
                if self.live or self.stop_event.wait(self.resend_backoff.next_delay()):
                    self._drop("publish_error")  # a live camera goes on with newer frames
                    return None
            except Exception as exc:  # a bad frame or a bug: count it, go on with the others
                log.error("camera %s: could not prepare a frame: %s: %s", cid, type(exc).__name__, exc)
                self._error(f"publish failed: {type(exc).__name__}: {exc}")
                self._drop("publish_error")
                return None
        if event is None:
            self._drop("outside_deployment")
        return event

    def _send(self, event: FrameEvent) -> Future:
        try:
            return self.publisher.send(event)
        except Exception as exc:  # the producer refused at once (buffer full past its wait): a failed send
            failed: Future = Future()
            failed.set_exception(exc)
            return failed

    def _settle(self, in_flight: deque, *, full: int) -> None:
        """Count the acknowledged sends at the head of ``in_flight``, waiting for the head while at least ``full``
        are in flight; a failed send is sent again (see the module doc), after a wait, until acknowledged or stopped."""
        cid = self.camera.id
        while in_flight:
            frame, event, future = in_flight[0]
            if not future.done():
                if len(in_flight) < full:
                    break
                if self._stopped_waiting():
                    self._give_up(in_flight)
                    break
                try:
                    future.exception(timeout=_SETTLE_EVERY_S)
                except TimeoutError:
                    pass
                continue
            error = future.exception()
            if error is None:
                in_flight.popleft()
                self.resend_backoff.reset()
                self._published(frame)
                continue
            if self.resend_backoff.attempt == 0:
                self._error(f"the broker did not take a frame ({type(error).__name__}: {error}); sending it again "
                            f"until it does")
            if self.stop_event.wait(self.resend_backoff.next_delay()):
                self._give_up(in_flight)
                break
            self.report.resends += 1
            CAMERA_RESENDS.labels(cid).inc()
            in_flight[0] = (frame, event, self._send(event))
        CAMERA_UNACKED.labels(cid).set(len(in_flight))

    def _stopped_waiting(self) -> bool:
        """Stopping, and the sends in flight had ``send_timeout_s`` to be acknowledged since."""
        if not self.stop_event.is_set():
            return False
        if self._stop_seen is None:
            self._stop_seen = time.monotonic()
        return time.monotonic() - self._stop_seen > self.settings.send_timeout_s

    def _give_up(self, in_flight: deque) -> None:
        """Stopping: what the broker has acknowledged is published, the rest counted as dropped (unacknowledged)."""
        while in_flight:
            frame, _, future = in_flight.popleft()
            if self._acked(future):
                self._published(frame)
            else:
                self._drop("unacknowledged")

    @staticmethod
    def _acked(future: Future) -> bool:
        try:
            return future.exception(timeout=_SETTLE_EVERY_S) is None
        except TimeoutError:
            return False

    def _published(self, frame: SampledFrame) -> None:
        cid, report = self.camera.id, self.report
        report.frames += 1
        report.last_frame_at = datetime.now(timezone.utc).isoformat()
        report.last_source_ts = frame.source_ts.isoformat()
        self.fps.tick()
        CAMERA_FRAMES.labels(cid).inc()
        CAMERA_LAST_FRAME.labels(cid).set(time.time())
        metrics.EVENTS_OUT.labels(INGEST.name, FRAMES.name).inc()

    # -- bookkeeping -------------------------------------------------------------
    def _on_state(self, old: CameraState | None, new: CameraState) -> None:
        cid, report = self.camera.id, self.report
        if old is not None:
            CAMERA_STATE.labels(cid, old.value).set(0)
            log.info("camera %s: %s -> %s", cid, old.value, new.value, extra={"camera": cid})
        CAMERA_STATE.labels(cid, new.value).set(1)
        CAMERA_UP.labels(cid).set(1 if new == CameraState.STREAMING else 0)
        if old == CameraState.STREAMING and new == CameraState.RECONNECTING:
            CAMERA_OUTAGES.labels(cid).inc()
        if old == CameraState.RECONNECTING and new == CameraState.CONNECTING:
            report.reconnects += 1
            CAMERA_RECONNECTS.labels(cid).inc()
        report.state = new.value
        report.state_since = datetime.fromtimestamp(self.machine.since if old else time.time(), timezone.utc).isoformat()

    def _drop(self, reason: str, n: int = 1) -> None:
        self.report.dropped[reason] = self.report.dropped.get(reason, 0) + n
        CAMERA_DROPPED.labels(self.camera.id, reason).inc(n)

    def _error(self, message: str) -> None:
        cid, report = self.camera.id, self.report
        log.error("camera %s: %s", cid, message, extra={"camera": cid})
        if report.last_error is not None:
            with contextlib.suppress(KeyError):
                CAMERA_LAST_ERROR.remove(cid, report.last_error[:200])
        report.last_error = message
        report.errors.append(message)
        del report.errors[:-_MAX_ERRORS_KEPT]
        CAMERA_ERRORS.labels(cid).inc()
        CAMERA_LAST_ERROR.labels(cid, message[:200]).set(1)

