"""Versioned event contracts shared by every stage and every downstream consumer.

Every event is one JSON object: the common envelope fields plus the fields of
its type. ``event_type`` and ``schema_version`` say which contract a payload
follows; a breaking change means a new model with a new version *and* a new
topic (see ``schemas.topics``), never an in-place edit.
"""

from __future__ import annotations

import base64
import math
import re
import uuid
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema


def _from_base64(value):
    # JSON carries bytes as base64 text; Python callers pass raw bytes.
    return base64.b64decode(value, validate=True) if isinstance(value, str) else value


Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(ts: datetime) -> datetime:
    """``ts`` in UTC. A naive time is taken as UTC: the one rule for every time Vigil reads."""
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``2024-05-01T12:00:00``, with ``Z`` or an offset, or naive) in UTC."""
    return as_utc(datetime.fromisoformat(text))


def new_id() -> str:
    return uuid.uuid4().hex


# A camera id names S3 keys, footage folders and metric labels: no path separators, no "..", no spaces.
CAMERA_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]*$"


def check_camera_id(value: str) -> str:
    """``value`` when it is a safe camera id (``CAMERA_ID_PATTERN``, at most 128 characters, no ``..``); ValueError otherwise."""
    if not value or len(value) > 128 or ".." in value or not re.fullmatch(CAMERA_ID_PATTERN, value):
        raise ValueError(f"camera id {value[:140]!r} is not allowed: use 1-128 letters, digits and _.:@- (no '..', no '/')")
    return value


CameraId = Annotated[str, AfterValidator(check_camera_id)]


class Envelope(BaseModel):
    """Fields every event carries."""

    # Unknown fields are ignored, not refused: an optional field added within a version (by a newer producer, a stage
    # one release ahead in a rolling upgrade) must not dead-letter the event at an older reader (docs/consumers.md).
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: str = Field(description="Which contract this payload follows.")
    event_id: str = Field(default_factory=new_id, description="Unique id of this event (hex UUID or a deterministic id).")
    schema_version: int = Field(description="Version of this event type's contract.")
    camera_id: CameraId = Field(description="Camera (sensor) the event derives from; the Kafka message key. 1-128 letters, digits and "
                                             "``_.:@-``, no ``..``: it names S3 keys and files.")
    source_ts: datetime = Field(description="Wall-clock time at which the source captured the frame (UTC).")
    trace_id: str = Field(description="Id shared by every event derived from one frame, for tracing across stages.")
    produced_at: datetime = Field(default_factory=utc_now, description="When the producing stage emitted this event (UTC).")
    run_id: str | None = Field(default=None, description="Replay run id; None for live processing. Replayed events never mix with live ones.")

    def lineage(self) -> dict:
        """The envelope fields an event derived from this one inherits: same camera, capture time, trace and run."""
        return {"camera_id": self.camera_id, "source_ts": self.source_ts, "trace_id": self.trace_id, "run_id": self.run_id}



class Box(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # as Envelope: unknown fields are a newer writer's

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


class FrameEvent(Envelope):
    """A decoded, sampled frame. The image travels inline as JPEG or by reference (claim-check) in S3."""

    event_type: Literal["frame"] = "frame"
    schema_version: Literal[1] = 1

    frame_index: int = Field(ge=0, description="Index of this frame among the frames the source decoded.")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    image_jpeg: Base64Bytes | None = Field(default=None, description="JPEG bytes of the frame when sent inline.")
    image_key: str | None = Field(default=None, description="S3 key (in the frames bucket) of the JPEG when sent by reference.")


class FaceEvent(Envelope):
    """One detected face: its box, landmarks and a crop for the embedder (the box widened by a margin, not aligned)."""

    event_type: Literal["face"] = "face"
    schema_version: Literal[1] = 1

    frame_event_id: str = Field(description="event_id of the FrameEvent the face was found in.")
    face_index: int = Field(ge=0, description="Index of the face within its frame.")
    box: Box = Field(description="Face box in frame pixels.")
    landmarks: list[tuple[float, float]] = Field(description="Five landmarks (eyes, nose, mouth corners) in frame pixels.")
    det_prob: float = Field(ge=0, le=1, description="Detector's face probability.")
    crop_jpeg: Base64Bytes = Field(description="RGB crop of the face box widened by a margin (not rotated or aligned), embedder input size, as JPEG.")
    crop_key: str = Field(description="S3 key of the crop (evidence bucket, transient prefix).")
    snapshot_key: str = Field(description="S3 key of the whole frame (evidence bucket, transient prefix).")
    frame_width: int = Field(gt=0)
    frame_height: int = Field(gt=0)
    # Added within v1 (optional, so payloads written before it still validate): None = not measured.
    quality: float | None = Field(
        default=None, ge=0, le=1,
        description="Detect's quality score of the crop in [0, 1] from its sharpness and pose (1: sharp and frontal); "
                    "None when not measured. Size and det_prob are separate fields.",
    )


def check_unit_vector(values: list[float]) -> list[float]:
    """``values`` when every one is finite and their L2 norm is 1 (within float32 rounding); ValueError otherwise."""
    if not all(math.isfinite(v) for v in values):
        raise ValueError("the embedding holds a value that is not a finite number (NaN or infinity)")
    norm = math.sqrt(math.fsum(v * v for v in values))
    if abs(norm - 1.0) > 1e-3:
        raise ValueError(f"the embedding is not L2-normalised (norm {norm:.4g})")
    return values


class EmbeddingEvent(Envelope):
    """A face embedding: L2-normalised 512-d FaceNet vector plus the face it came from."""

    event_type: Literal["embedding"] = "embedding"
    schema_version: Literal[1] = 1

    face_event_id: str
    frame_event_id: str
    face_index: int = Field(ge=0)
    box: Box
    det_prob: float = Field(ge=0, le=1)
    crop_key: str
    snapshot_key: str
    model: str = Field(description="Embedding model id (weights name and hash prefix).")
    embedding: Annotated[list[float], AfterValidator(check_unit_vector)] = Field(
        min_length=512, max_length=512, description="L2-normalised vector of finite numbers.")
    # Added within v1 (optional, so payloads written before it still validate).
    quality: float | None = Field(default=None, ge=0, le=1, description="The face's FaceEvent.quality, passed through; None when not measured.")


class AlertEvent(Envelope):
    """A watch-listed person was seen. Downstream systems consume these.

    Match raises at most one alert per (track, person): a track is one camera's faces of one person over
    consecutive frames. The face fields (``face_event_id``, ``box``, ``score``, the evidence keys,
    ``source_ts`` and ``trace_id``) describe the track's best face for the person, the ``track_*`` fields
    the decision over the whole track. The ``track_*`` fields were added within v1 as optional fields
    (a backward-compatible change: older payloads, from before tracking, lack them and still validate,
    reading as None); consumers must accept None there.
    """

    event_type: Literal["alert"] = "alert"
    schema_version: Literal[1] = 1

    alert_id: str = Field(description="Deterministic id, from the track and the person: a retried or redelivered sighting gives the same id, so consumers can deduplicate.")
    person_id: str
    score: float = Field(description="Cosine similarity between the face and the person's closest enrolled template.")
    threshold: float = Field(description="Decision threshold in force when the alert was raised.")
    face_event_id: str
    box: Box
    snapshot_key: str = Field(description="S3 key of the frame (evidence bucket, alerts prefix).")
    crop_key: str = Field(description="S3 key of the face crop (evidence bucket, alerts prefix).")
    model: str
    track_id: str | None = Field(default=None, description="The track the alert decides on (see TrackEndedEvent); None from producers before tracking.")
    track_score: float | None = Field(default=None, description="The person's aggregate score over the track when the alert was raised (weighted mean of per-face scores).")
    track_faces: int | None = Field(default=None, ge=1, description="Faces in the track when the alert was raised.")
    deployment_id: str | None = Field(default=None, description="The deployment (authorised use) under which the alert was raised; None before deployments.")
    case: str | None = Field(default=None, description="The case or reference of that deployment.")
    evidence_missing: list[Literal["snapshot", "crop"]] = Field(
        default_factory=list,
        description="Evidence objects that were gone when the alert was raised (deleted or lost before match could copy them): "
                    "the alert stands on the scores, and nothing exists at those keys. Empty (the default) when all evidence was copied.")


class TrackEndedEvent(Envelope):
    """A track ended: one camera's consecutive faces of one person, as match tied them together.

    A track ends when its camera has shown no face for it for ``match.track_gap_s`` seconds of source
    time, which match notices when a later face of the same camera (and run) arrives, or when it is
    evicted to bound memory. ``source_ts`` is the source time of the track's last face.
    """

    event_type: Literal["track_ended"] = "track_ended"
    schema_version: Literal[1] = 1

    track_id: str = Field(description="Deterministic id, from the run, camera and the track's first face; AlertEvent.track_id refers to it.")
    reason: Literal["gap", "evicted"] = Field(description="gap: not seen for match.track_gap_s; evicted: dropped to bound the tracks held per camera.")
    started_at: datetime = Field(description="Source time of the track's first face.")
    first_face_event_id: str
    last_face_event_id: str
    faces: int = Field(ge=1, description="Faces in the track.")
    last_box: Box = Field(description="Box of the track's last face, in frame pixels.")
    alerted_person_ids: list[str] = Field(default_factory=list, description="Persons an alert was raised for on this track.")


class AuditEvent(Envelope):
    """Accountability record: who did what to the watchlist or its data, and why."""

    # Unknown fields are kept, not dropped: they are part of what the chain hashes, so a sequencer or verifier one
    # release behind seals and checks a newer writer's event exactly as it was written.
    model_config = ConfigDict(extra="allow", frozen=True)

    event_type: Literal["audit"] = "audit"
    schema_version: Literal[1] = 1

    actor: str = Field(min_length=1, description="Operator or service that acted.")
    action: Literal["enroll", "enroll_refused", "remove", "search", "view", "retention_delete", "review", "user",
                    "expire", "deployment_start", "deployment_end", "export", "proposal"] = Field(
        description="review: a reviewer confirmed or rejected an alert (details.decision); user: an admin changed a console user; "
                    "proposal: a watchlist entry proposed, approved or rejected in the console (details.decision); "
                    "search: a retrospective search of recorded footage (vigil replay --camera); view: a read of face data "
                    "(a face topic, the alerts, evidence); export: an alert's evidence or a run report left the system; "
                    "expire: watchlist entries purged at their expiry (docs/accountability.md lists every emitter).")
    subject: str = Field(description="Person id (or object key) acted upon.")
    reason: str = Field(min_length=1, description="Why; required for every action on a person.")
    details: dict = Field(default_factory=dict)
    # Added within v1 (optional): None on requests (vigil.audit-requests.v1) and on events before the chain.
    deployment_id: str | None = Field(default=None, description="The deployment (authorised use) the action serves, if any.")
    seq: int | None = Field(default=None, ge=1, description="Position in the sealed audit chain (1, 2, ...), set by the audit sequencer.")
    prev_hash: str | None = Field(default=None, description="hash of the previous sealed event (64 zeros before the first).")
    hash: str | None = Field(default=None, description="SHA-256 of this event's canonical JSON without this field (accountability.audit).")


class ReviewDecisionEvent(Envelope):
    """One reviewer's decision on an alert, written by the console; an alert's review state is derived from these.

    Keyed by ``alert_id`` on one partition, so decisions are totally ordered. An alert is confirmed by
    the first two confirmations of different reviewers before any rejection, and closed by the first rejection.
    """

    event_type: Literal["review_decision"] = "review_decision"
    schema_version: Literal[1] = 1

    alert_id: str = Field(description="The AlertEvent decided on.")
    person_id: str = Field(description="The alert's person.")
    decision: Literal["confirm", "reject"]
    reviewer: str = Field(min_length=1, description="The authenticated console user who decided.")
    note: str | None = Field(default=None, description="The reviewer's comment, if any.")


class ConfirmedAlertEvent(Envelope):
    """An alert that two different reviewers confirmed: what downstream systems may act on.

    The envelope is the alert's (camera, capture time, trace, run); ``event_id`` is ``<alert_id>-confirmed``,
    so a repeat is recognisable.
    """

    event_type: Literal["confirmed_alert"] = "confirmed_alert"
    schema_version: Literal[1] = 1

    alert: AlertEvent = Field(description="The alert as match raised it.")
    confirmed_by: list[str] = Field(min_length=2, description="The reviewers who confirmed it, in order.")
    decision_event_ids: list[str] = Field(min_length=2, description="event_id of each confirming ReviewDecisionEvent.")


class DeploymentEvent(Envelope):
    """An authorised use: who authorised which cameras, for what case and purpose, when, against which watchlist.

    Keyed by ``deployment_id`` on a compacted topic: its latest version is the deployment's state (a
    start, then an end). ``camera_id`` is ``deployments``; ``source_ts`` is when this version was written.
    """

    event_type: Literal["deployment"] = "deployment"
    schema_version: Literal[1] = 1

    deployment_id: str = Field(min_length=1, description="Unique id of the deployment.")
    case: str = Field(min_length=1, description="Case or reference number the use serves.")
    purpose: str = Field(min_length=1, description="Why the use is needed.")
    authorised_by: str = Field(min_length=1, description="The authenticated actor who authorised (started) it.")
    kind: Literal["live", "retrospective"] = Field(description="live: cameras as they record; retrospective: recorded footage (vigil replay).")
    cameras: list[str] = Field(min_length=1, description="The cameras it covers.")
    starts_at: datetime = Field(description="Start of the window of capture times it covers (UTC).")
    ends_at: datetime = Field(description="End of that window (exclusive).")
    persons: list[str] | None = Field(default=None, description="The watchlist: the persons who may match; None: every entry in force "
                                                                "(live only; a retrospective use must name the persons searched for).")
    run_ids: list[str] = Field(default_factory=list, description="Runs it is bound to (vigil run, replays): their events are covered, "
                                                                 "and only theirs. Empty: live traffic of its cameras.")
    watchlist_digest: str = Field(description="SHA-256 over the watchlist entries in force when it started (accountability.deployments).")
    ended_at: datetime | None = Field(default=None, description="When it was ended early; None while active.")
    ended_by: str | None = None
    end_reason: str | None = None


class DeadLetterEvent(Envelope):
    """A message a stage could not process, kept with the reason so nothing accepted is lost."""

    event_type: Literal["deadletter"] = "deadletter"
    schema_version: Literal[1] = 1

    stage: str
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    error: str
    payload: Base64Bytes = Field(description="The original message value, unchanged; only its first bytes when ``payload_truncated``.")
    # Added within v1 (optional): a dead letter must itself fit the broker's message limit.
    payload_size: int | None = Field(default=None, ge=0, description="Length of the original message value in bytes.")
    payload_sha256: str | None = Field(default=None, description="SHA-256 (hex) of the original message value.")
    payload_truncated: bool = Field(default=False, description="True when ``payload`` holds only the first bytes of the value.")


class TrackedFace(BaseModel):
    """A face a track keeps a reference to (its last face, each person's best face)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    face_event_id: str
    source_ts: datetime
    trace_id: str
    box: Box
    crop_key: str
    snapshot_key: str
    model: str


class PersonEvidence(BaseModel):
    """What a track holds for one person: the sums its alert rule needs and the best face (match.decision.Evidence)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    weighted_score: float
    supporting: int
    best_score: float
    best_face: TrackedFace


class TrackState(BaseModel):
    """One open face track, complete enough to carry on after a restart or a partition move (match.tracking.Track)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    track_id: str
    first_face_event_id: str
    started_at: datetime
    last_seen: datetime
    last_frame_event_id: str
    last_face: TrackedFace
    faces: int
    weight: float
    embedding_sum: Base64Bytes = Field(description="Weighted sum of the track's embeddings: 512 little-endian float64 "
                                                   "(exact, so a restored track decides as the uninterrupted one would).")
    persons: dict[str, PersonEvidence] = Field(default_factory=dict)
    alerted: list[str] = Field(default_factory=list)


class MatchStateEvent(Envelope):
    """Match's open tracks of one (run, camera), written after each batch's outputs and before its offsets commit.

    Internal to match (its changelog, a compacted topic keyed by ``state_key``): whichever instance handles the
    camera next, after a restart or a rebalance, carries on from here, so track and alert ids stay the same.
    """

    event_type: Literal["match-state"] = "match-state"
    schema_version: Literal[1] = 1

    tracks: list[TrackState] = Field(default_factory=list, description="The open tracks; empty once they all ended.")
    applied: list[str] = Field(default_factory=list, description="The last face event ids applied to these tracks, "
                                                                 "oldest first: a redelivered face among them is not applied twice.")
    applied_until: datetime | None = Field(default=None, description="Source time of the latest face applied: a face of the camera "
                                                                      "captured before it was applied already (one camera's faces arrive in order).")

    @property
    def state_key(self) -> str:
        """The changelog key: one record per (run, camera)."""
        return f"{self.run_id or ''}|{self.camera_id}"


EVENT_TYPES: tuple[type[Envelope], ...] = (
    FrameEvent, FaceEvent, EmbeddingEvent, AlertEvent, TrackEndedEvent, AuditEvent, DeploymentEvent, ReviewDecisionEvent, ConfirmedAlertEvent,
    DeadLetterEvent, MatchStateEvent,
)
