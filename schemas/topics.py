"""The topic registry: the one place that names Vigil's topics, their payloads, keys and retention.

Stages, the admin code that creates topics, the exporters and the docs all read
this module; no topic name is written anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import (
    AlertEvent,
    AuditEvent,
    ConfirmedAlertEvent,
    DeploymentEvent,
    DeadLetterEvent,
    EmbeddingEvent,
    Envelope,
    FaceEvent,
    FrameEvent,
    MatchStateEvent,
    ReviewDecisionEvent,
    TrackEndedEvent,
)

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class TopicSpec:
    name: str
    event: type[Envelope]
    key: str
    partitions: int
    retention_ms: int  # -1 keeps forever
    cleanup_policy: str
    description: str
    # Kafka deletes whole segments only: a segment this short makes retention_ms hold to about a segment.
    segment_ms: int | None = None

    @property
    def label(self) -> str:
        """The name without prefix and version (``vigil.faces.v1`` -> ``faces``), for counts and reports."""
        return self.name.split(".")[1]

    @property
    def configs(self) -> dict[str, str]:
        configs = {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}
        if self.segment_ms is not None:
            configs.update({"segment.ms": str(self.segment_ms), "file.delete.delay.ms": "1000"})
        return configs

    def decode(self, raw: bytes) -> Envelope:
        """Parse and validate one message value; raises pydantic.ValidationError on a bad payload."""
        return self.event.model_validate_json(raw)

    @staticmethod
    def encode(event: Envelope) -> bytes:
        return event.model_dump_json().encode()


# Frames, faces and embeddings of everyone who passes a camera: kept only as long as a stage may be down
# and catch up (minutes), in one-minute segments so that the retention is real.
FACE_DATA_RETENTION_MS = 15 * MINUTE_MS
FACE_DATA_SEGMENT_MS = MINUTE_MS

FRAMES = TopicSpec(
    "vigil.frames.v1", FrameEvent, "camera_id", 8, FACE_DATA_RETENTION_MS, "delete",
    "Sampled frames from ingest (JPEG inline or S3 reference). Minutes of retention: frames are transient.",
    segment_ms=FACE_DATA_SEGMENT_MS,
)
FACES = TopicSpec(
    "vigil.faces.v1", FaceEvent, "camera_id", 8, FACE_DATA_RETENTION_MS, "delete",
    "One event per detected face, with its crop (the box widened by a margin) inline. Minutes of retention.",
    segment_ms=FACE_DATA_SEGMENT_MS,
)
EMBEDDINGS = TopicSpec(
    "vigil.embeddings.v1", EmbeddingEvent, "camera_id", 8, FACE_DATA_RETENTION_MS, "delete",
    "One 512-d embedding per face (biometric data). Minutes of retention.",
    segment_ms=FACE_DATA_SEGMENT_MS,
)
ALERTS = TopicSpec(
    "vigil.alerts.v1", AlertEvent, "camera_id", 4, 30 * DAY_MS, "delete",
    "Watchlist hits for downstream systems. Keyed by camera, so one camera's alerts stay in order.",
)
TRACKS = TopicSpec(
    "vigil.tracks.v1", TrackEndedEvent, "camera_id", 4, 7 * DAY_MS, "delete",
    "One event per ended face track (a camera's consecutive faces of one person), with the persons alerted on it.",
)
AUDIT_REQUESTS = TopicSpec(
    "vigil.audit-requests.v1", AuditEvent, "camera_id", 1, -1, "delete",
    "Audit events as their writers append them (acks=all, before the action); the audit sequencer seals them into vigil.audit.v1.",
)
AUDIT = TopicSpec(
    "vigil.audit.v1", AuditEvent, "camera_id", 1, -1, "delete",
    "The sealed accountability log: every audit request with its sequence number and the hash of the previous event, "
    "written by the audit sequencer alone. One partition keeps a total order.",
)
DEPLOYMENTS = TopicSpec(
    "vigil.deployments.v1", DeploymentEvent, "deployment_id", 1, -1, "compact",
    "Authorised uses (deployments), one record per deployment id, read as a table by every stage: latest version wins.",
)
REVIEWS = TopicSpec(
    "vigil.reviews.v1", ReviewDecisionEvent, "alert_id", 1, -1, "delete",
    "Reviewers' decisions on alerts, from the console; review state is derived from them. One partition: a total order.",
)
CONFIRMED = TopicSpec(
    "vigil.confirmed.v1", ConfirmedAlertEvent, "camera_id", 4, 30 * DAY_MS, "delete",
    "Alerts two different reviewers confirmed (human oversight): what downstream systems act on.",
)
MATCH_STATE = TopicSpec(
    "vigil.match-state.v1", MatchStateEvent, "state_key", 8, DAY_MS, "compact,delete",
    "Match's open face tracks per (run, camera), its changelog: the latest record of a key is the state to carry on from. "
    "Holds embedding sums (biometric): compacted, and a day of retention at most.",
    segment_ms=HOUR_MS,
)
DEAD_LETTERS = TopicSpec(
    "vigil.deadletter.v1", DeadLetterEvent, "camera_id", 1, 1 * HOUR_MS, "delete",
    "Messages a stage could not process, with the reason and the original bytes (which may hold faces: an hour of retention).",
    segment_ms=5 * MINUTE_MS,
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    FRAMES, FACES, EMBEDDINGS, ALERTS, TRACKS, MATCH_STATE, AUDIT_REQUESTS, AUDIT, DEPLOYMENTS, REVIEWS, CONFIRMED, DEAD_LETTERS,
)
BY_NAME = {t.name: t for t in ALL_TOPICS}
