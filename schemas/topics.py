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
    DeadLetterEvent,
    EmbeddingEvent,
    Envelope,
    FaceEvent,
    FrameEvent,
    ReviewDecisionEvent,
    TrackEndedEvent,
)

HOUR_MS = 3_600_000
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

    @property
    def label(self) -> str:
        """The name without prefix and version (``vigil.faces.v1`` -> ``faces``), for counts and reports."""
        return self.name.split(".")[1]

    @property
    def configs(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}

    def decode(self, raw: bytes) -> Envelope:
        """Parse and validate one message value; raises pydantic.ValidationError on a bad payload."""
        return self.event.model_validate_json(raw)

    @staticmethod
    def encode(event: Envelope) -> bytes:
        return event.model_dump_json().encode()


FRAMES = TopicSpec(
    "vigil.frames.v1", FrameEvent, "camera_id", 8, 1 * HOUR_MS, "delete",
    "Sampled frames from ingest (JPEG inline or S3 reference). Short retention: frames are transient.",
)
FACES = TopicSpec(
    "vigil.faces.v1", FaceEvent, "camera_id", 8, 1 * HOUR_MS, "delete",
    "One event per detected face, with its crop (the box widened by a margin) inline.",
)
EMBEDDINGS = TopicSpec(
    "vigil.embeddings.v1", EmbeddingEvent, "camera_id", 8, 1 * DAY_MS, "delete",
    "One 512-d embedding per face.",
)
ALERTS = TopicSpec(
    "vigil.alerts.v1", AlertEvent, "camera_id", 4, 30 * DAY_MS, "delete",
    "Watchlist hits for downstream systems. Keyed by camera, so one camera's alerts stay in order.",
)
TRACKS = TopicSpec(
    "vigil.tracks.v1", TrackEndedEvent, "camera_id", 4, 7 * DAY_MS, "delete",
    "One event per ended face track (a camera's consecutive faces of one person), with the persons alerted on it.",
)
AUDIT = TopicSpec(
    "vigil.audit.v1", AuditEvent, "camera_id", 1, -1, "delete",
    "Append-only accountability log: enrolments, removals, searches, retention deletes. One partition keeps a total order.",
)
REVIEWS = TopicSpec(
    "vigil.reviews.v1", ReviewDecisionEvent, "alert_id", 1, -1, "delete",
    "Reviewers' decisions on alerts, from the console; review state is derived from them. One partition: a total order.",
)
CONFIRMED = TopicSpec(
    "vigil.confirmed.v1", ConfirmedAlertEvent, "camera_id", 4, 30 * DAY_MS, "delete",
    "Alerts two different reviewers confirmed (human oversight): what downstream systems act on.",
)
DEAD_LETTERS = TopicSpec(
    "vigil.deadletter.v1", DeadLetterEvent, "camera_id", 1, 7 * DAY_MS, "delete",
    "Messages a stage could not process, with the reason and the original bytes.",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (FRAMES, FACES, EMBEDDINGS, ALERTS, TRACKS, AUDIT, REVIEWS, CONFIRMED, DEAD_LETTERS)
BY_NAME = {t.name: t for t in ALL_TOPICS}
