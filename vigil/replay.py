"""``vigil replay``: archived footage back through the pipeline, or a topic re-read from a point in time.

Footage (``--camera ID --from T1 --to T2``)
    An ingest of the camera's recorded segments in [T1, T2) (``footage://``
    source, see ``ingest.archive``), in this process, publishing to the frames
    topic under a fresh replay run id. The stages that are running pick the
    frames up like any others; every event derived from them carries the run
    id, so replayed alerts are marked and never mixed with live ones (match
    keeps its tracks per run). Frames keep their original capture times,
    so a replay raises its alerts at the same source times as the live run.
    Frames are sampled as the live camera's (its target fps and mode where
    ``ingest.cameras`` names it, else ``ingest.target_fps``).
    To replay through stages of its own instead, give the footage URL to
    ``vigil run --no-stack``.

    Retrospective identification is an authorised use: the replay needs a
    ``retrospective`` deployment that covers the camera and the whole window
    and names the persons searched for. The replay's run is bound to it, so
    only those persons can match, and the search is audited (``search``).

Topic (``--topic NAME --since TIME [--until TIME]``)
    The events of a registry topic whose record timestamps fall in the range,
    one JSON object per line, for a downstream system to re-consume. The
    start is found with Kafka's time index (``offsets_for_times``) where the
    broker has one; records before ``since`` are filtered out by timestamp
    whatever the lookup answered. Tansu 0.6 answers every time lookup with
    offset 0 (and timestamp -1), so there the read is a scan from the
    earliest retained offset: slower, still exact. A read of any topic but
    the audit and deployment records is audited (``view``) with its reason:
    they hold people's faces, embeddings or identifications.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from accountability.actors import Actor, require
from accountability.audit import AuditLog
from accountability.deployments import DeploymentError, Deployments
from ingest.archive import footage_url
from ingest.camera import CameraReport
from runtime.kafka import EventReader, ReadEvent
from runtime.settings import CameraSettings, VigilSettings
from schemas.events import AlertEvent, as_utc
from schemas.topics import ALERTS, AUDIT, AUDIT_REQUESTS, BY_NAME, DEPLOYMENTS

# Records about the system's use, not about people: reading them is not audited.
UNAUDITED_TOPICS = {AUDIT.name, AUDIT_REQUESTS.name, DEPLOYMENTS.name}


def new_run_id() -> str:
    return f"replay-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


@dataclass
class FootageReplay:
    run_id: str
    camera_id: str
    start: datetime
    end: datetime
    started_at: datetime
    report: CameraReport | None = None


def replay_footage(settings: VigilSettings, actor: Actor, camera_id: str, start: datetime, end: datetime, *,
                   deployment_id: str, reason: str, audit: AuditLog, run_id: str | None = None) -> FootageReplay:
    """Publish ``camera_id``'s recorded frames in [start, end) under a replay run id bound to ``deployment_id``
    (role ``reviewer`` or ``authoriser``; audited as ``search``); returns when they are all sent."""
    from ingest.service import IngestService

    require(actor, "reviewer", "authoriser")
    start, end = as_utc(start), as_utc(end)
    if not start < end:
        raise ValueError(f"the replay window must start before it ends (got {start.isoformat()} to {end.isoformat()})")
    if not reason.strip():
        raise ValueError("a replay needs a reason")
    replay = FootageReplay(run_id or new_run_id(), camera_id, start, end, datetime.now(timezone.utc))
    with Deployments(settings, audit=audit) as deployments:
        deployment = deployments.get(deployment_id)
        if deployment.kind != "retrospective" or deployment.ended_at is not None or not deployment.persons:
            raise DeploymentError(f"deployment {deployment_id} is not an active retrospective deployment naming the persons searched for")
        if camera_id not in deployment.cameras or not (deployment.starts_at <= start and end <= deployment.ends_at):
            raise DeploymentError(f"deployment {deployment_id} does not cover camera {camera_id} from {start.isoformat()} "
                                  f"to {end.isoformat()} (it covers {', '.join(deployment.cameras)} from "
                                  f"{deployment.starts_at.isoformat()} to {deployment.ends_at.isoformat()})")
        audit.append(actor, "search", camera_id, reason, {
            "run_id": replay.run_id, "from": start.isoformat(), "to": end.isoformat(), "persons": deployment.persons,
            "case": deployment.case}, deployment_id=deployment_id)
        deployments.bind_run(deployment_id, replay.run_id)
    # Sampled as the live camera is (its configured target fps and mode, when this process knows the camera).
    live = next((c for c in settings.ingest.cameras if c.id == camera_id), None)
    sampling = {"target_fps": live.target_fps, "mode": live.mode} if live is not None else {}
    camera = CameraSettings(id=camera_id, url=footage_url(camera_id, start, end), **sampling)
    # A tool beside the running services: its probes go on a free port, not the stage's.
    settings = settings.model_copy(update={"stage": settings.stage.model_copy(update={"health_port": 0})})
    service = IngestService(settings, [camera], run_id=replay.run_id)
    replay.report = service.run()[camera_id]
    return replay


def run_alerts(settings: VigilSettings, run_id: str | None, *, since: datetime | None = None,
               idle_timeout_s: float = 10.0) -> Iterator[AlertEvent]:
    """The alerts raised under ``run_id`` (None: live ones) published at or after ``since``, until none came for
    ``idle_timeout_s``."""
    with EventReader(settings.kafka, ALERTS, since=since) as reader:
        seen: set[str] = set()
        for read in reader.follow(idle_timeout_s=idle_timeout_s):
            event = read.event
            if isinstance(event, AlertEvent) and event.run_id == run_id and event.alert_id not in seen:
                seen.add(event.alert_id)
                yield event


def follow_alerts(settings: VigilSettings, actor: Actor, reason: str, *, since: datetime | None, audit: AuditLog,
                  idle_timeout_s: float | None = None) -> Iterator[ReadEvent]:
    """The alerts topic from ``since`` (None: the earliest retained), as a downstream system reads it; audited (``view``)."""
    audit.append(actor, "view", ALERTS.name, reason, {"what": "alerts", "since": since.isoformat() if since else None})
    with EventReader(settings.kafka, ALERTS, since=since) as reader:
        yield from reader.follow(idle_timeout_s=idle_timeout_s)


def replay_topic(settings: VigilSettings, actor: Actor, topic: str, since: datetime, *, reason: str, audit: AuditLog,
                 until: datetime | None = None, idle_timeout_s: float = 5.0) -> Iterator[ReadEvent]:
    """Records of ``topic`` with a timestamp in [since, until], until none came for ``idle_timeout_s``; a read of
    people's data (any topic but the audit and deployment records) is audited (``view``) first.

    Malformed payloads come through too (``event`` None, ``error`` set), as a
    downstream re-consumer needs to know about them.
    """
    spec = BY_NAME.get(topic)
    if spec is None:
        raise ValueError(f"unknown topic {topic!r}; the registry has {sorted(BY_NAME)}")
    if topic not in UNAUDITED_TOPICS:
        if not reason.strip():
            raise ValueError(f"reading {topic} needs a reason (it holds people's data)")
        audit.append(actor, "view", topic, reason, {"what": "topic", "since": as_utc(since).isoformat(),
                                                    "until": as_utc(until).isoformat() if until else None})
    since = as_utc(since)
    since_ms = int(since.timestamp() * 1000)
    until_ms = int(as_utc(until).timestamp() * 1000) if until is not None else None
    with EventReader(settings.kafka, spec, since=since) as reader:
        for read in reader.follow(idle_timeout_s=idle_timeout_s):
            if read.timestamp_ms < since_ms or (until_ms is not None and read.timestamp_ms > until_ms):
                continue
            yield read
