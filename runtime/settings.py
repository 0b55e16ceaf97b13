"""Typed settings: the one way to configure Vigil.

Sources, strongest first: explicit arguments, environment variables
(``VIGIL_<SECTION>__<FIELD>``, e.g. ``VIGIL_KAFKA__BOOTSTRAP=broker:9092``),
then YAML files. The files are those listed in ``VIGIL_CONFIG`` (separated by
``:``); when it is unset, the local stack's file ``$VIGIL_HOME/stack.yaml``
is read if ``vigil up`` wrote one. Every field carries its own description so
the docs can be generated from the models (``vigil config``).

Unknown keys are errors that name the key and its section, whichever source
they come from. Other ``VIGIL_*`` variables without ``__`` (``VIGIL_HOME``,
``VIGIL_CONFIG``, test switches) are not settings and are left alone.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from schemas.events import as_utc, check_camera_id


def vigil_home() -> Path:
    """Where local state lives (stack endpoints, service data, models)."""
    return Path(os.environ.get("VIGIL_HOME", ".vigil")).resolve()


def config_files() -> list[Path]:
    listed = os.environ.get("VIGIL_CONFIG")
    if listed:
        return [Path(p) for p in listed.split(os.pathsep) if p]
    stack_file = vigil_home() / "stack.yaml"
    return [stack_file] if stack_file.exists() else []


def default_weights_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/vigil/models``: one per user, as torch caches its hub, so any folder finds it."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vigil" / "models"


# Error messages leave the values out: they may be secrets (a misspelt password key included).
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class KafkaSettings(_Section):
    bootstrap: str = Field("127.0.0.1:9092", description="Comma-separated bootstrap servers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol: SSL and SASL_SSL turn TLS on, SASL_PLAINTEXT and SASL_SSL a SASL login.",
    )
    ssl_cafile: Path | None = Field(None, description="PEM file of the CAs that sign the brokers' certificates, used with TLS (None: the system's CAs).")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(None, description="SASL mechanism; required with SASL_*.")
    sasl_username: str | None = Field(None, description="SASL user; required with SASL_*.")
    sasl_password: SecretStr | None = Field(None, description="SASL password; required with SASL_*.")
    replication_factor: int = Field(1, description="Replication factor for topics Vigil creates (3 in production).")
    partitions: int | None = Field(None, description="Override the registry's partition count for every topic (tests).")
    session_timeout_s: float = Field(10.0, description="Session timeout of the stream stages' consumer groups.")
    heartbeat_interval_s: float = Field(3.0, description="Heartbeat interval of the stream stages' consumer groups.")
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = Field(
        "none", description="Producer compression. zstd takes the base64 and JSON overhead off inline images at a tenth of gzip's CPU "
                        "(Kubernetes uses it); lz4 and snappy gain nothing on JPEG (BENCHMARKS.md).",
    )
    fetch_max_wait_ms: int = Field(
        100, ge=0, description="Longest time a stream stage's fetch may wait at the broker when no data is there (faust hard-codes 1500). "
                               "Some brokers (Tansu) hold a fetch that long even when data arrives meanwhile (BENCHMARKS.md).",
    )

    @model_validator(mode="after")
    def _sasl_login_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_"):
            missing = [name for name in ("sasl_mechanism", "sasl_username", "sasl_password") if not getattr(self, name)]
            if missing:
                raise ValueError(f"security_protocol {self.security_protocol} needs {' and '.join(missing)}")
        return self


class S3Settings(_Section):
    endpoint: str = Field("127.0.0.1:8333", description="host:port of the S3 API.")
    access_key: str = Field("vigil", description="Access key.")
    secret_key: SecretStr = Field(SecretStr("vigil-secret"), description="Secret key.")
    secure: bool = Field(False, description="Use TLS.")
    region: str | None = Field(None, description="Region, when the server needs one.")
    evidence_bucket: str = Field("vigil-evidence", description="Snapshots and crops: transient/ for every face, alerts/ for hits.")
    frames_bucket: str = Field("vigil-frames", description="Frames sent by reference (claim-check).")
    footage_bucket: str = Field("vigil-footage", description="Recorded footage segments.")
    watchlist_bucket: str = Field("vigil-watchlist", description="Enrolment photos.")


class MilvusSettings(_Section):
    uri: str = Field("http://127.0.0.1:19530", description="Milvus URI (a cluster in production).")
    token: SecretStr | None = Field(None, description="Milvus token (user:password) when auth is on.")
    collection: str = Field("vigil_watchlist", description="Watchlist collection name.")
    index: Literal["FLAT", "HNSW"] = Field("HNSW", description="Vector index type.")
    hnsw_m: int = Field(16, description="HNSW M.")
    hnsw_ef_construction: int = Field(200, description="HNSW efConstruction.")
    hnsw_ef: int = Field(64, description="HNSW ef at search time.")


class ModelSettings(_Section):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when available.")
    weights_dir: Path = Field(default_factory=default_weights_dir, description="Where `python -m embed.weights` wrote the converted embedder "
                                                                               "weights; default ${XDG_CACHE_HOME:-~/.cache}/vigil/models.")
    torch_threads: int | None = Field(None, description="torch.set_num_threads; None leaves torch's default.")


# Pillow's MAX_IMAGE_PIXELS in every Vigil process (runtime.imaging): no pixel cap below may exceed it, so the stages'
# own checks from the header always come first and Pillow's guard covers any other decoding path.
IMAGE_PIXELS_CEILING = 100_000_000


class CameraSettings(_Section):
    id: Annotated[str, AfterValidator(check_camera_id)] = Field(
        description="Camera id: the key of every event derived from it, and part of S3 keys, file names and metric labels: "
                    "1-128 letters, digits and _.:@- (no '..', no '/').")
    url: str = Field(description="File path, rtsp://, http(s):// URL, s3://BUCKET/KEY (a footage object) or "
                                 "footage://CAMERA?from=T1&to=T2 (recorded segments, what `vigil replay` reads).")
    target_fps: float | None = Field(None, gt=0, description="Overrides ingest.target_fps for this camera.")
    mode: Literal["fps", "keyframes"] = Field("fps", description="Sampling: 'fps' samples at the target fps by presentation time; "
                                                                 "'keyframes' decodes keyframes only (about 100x cheaper), at most target fps of them.")
    live: bool | None = Field(None, description="Live camera (reconnects, drops oldest frames under backpressure) or recording (ends, waits). "
                                                "None: rtsp/rtmp/udp/srt/... are live; files, http(s) and s3 are recordings.")
    rtsp_transport: Literal["tcp", "udp"] | None = Field(None, description="Overrides ingest.rtsp_transport for this camera.")
    hwaccel: bool | None = Field(None, description="Overrides ingest.hwaccel for this camera.")
    record: bool | None = Field(None, description="Overrides ingest.record for this camera.")


class IngestSettings(_Section):
    cameras: list[CameraSettings] = Field(default_factory=list, description="Sources this ingest process reads.")
    target_fps: float = Field(5.0, gt=0, description="Frames per second to sample from each source.")
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality of published frames.")
    max_width: int | None = Field(1280, description="Downscale frames wider than this before publishing (None keeps size).")
    frame_transport: Literal["inline", "s3"] = Field("inline", description="inline: JPEG in the event; s3: JPEG in the frames bucket, key in the event.")
    realtime: bool = Field(False, description="Pace file sources at their native speed, as a live camera would.")
    hwaccel: bool = Field(False, description="Ask for CUDA decoding; sources fall back to software decoding where it is unavailable.")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport: tcp (interleaved, robust through NAT) or udp (RTP over UDP).")
    timeout_s: float = Field(10.0, gt=0, description="Connect and read timeout of network sources; a silent live camera is declared lost after about twice this.")
    queue_frames: int = Field(8, ge=1, description="Bounded queue of sampled frames per camera, between decoding and publishing.")
    live_backpressure: Literal["drop_oldest", "wait"] = Field("drop_oldest", description="Policy of a live camera's full queue: drop_oldest keeps latency low (each drop is counted); wait blocks decoding.")
    file_backpressure: Literal["drop_oldest", "wait"] = Field("wait", description="Policy of a recording's full queue: wait skips nothing; drop_oldest keeps up with realtime pacing.")
    reconnect_initial_s: float = Field(1.0, gt=0, description="First reconnect delay of a live camera; doubles per failed attempt up to reconnect_max_s.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Upper bound of the reconnect delay.")
    reconnect_jitter: float = Field(0.2, ge=0, le=1, description="Each delay is drawn from [bound * (1 - jitter), bound], so cameras behind one server do not return in lockstep.")
    reconnect_max_attempts: int | None = Field(None, ge=1, description="Reconnect attempts in a row before a live camera is declared failed (None: forever).")
    record: bool = Field(False, description="Record footage: remux (no re-encoding) each camera into rolling MP4 segments in the footage bucket.")
    segment_s: float = Field(10.0, gt=0, description="Target length of a footage segment; a segment is cut at the first keyframe after it.")
    footage_retention_h: float = Field(72.0, gt=0, description="Recorded segments older than this many hours are deleted by the ingest that records the camera.")
    retention_interval_s: float = Field(600.0, gt=0, description="How often ingest enforces footage retention.")
    status_dir: Path | None = Field(None, description="Where each ingest process writes its cameras' states for `vigil status` (None: <VIGIL_HOME>/ingest).")
    run_id: str | None = Field(None, description="Run id stamped on every event, set by `vigil run` and replays; None for a live deployment. "
                                                 "Frame ids derive from it, the camera id and the frame's position in its stream.")
    run_started_at: Annotated[datetime, AfterValidator(as_utc)] | None = Field(
        None, description="Start of the run (naive: UTC). A recording's frames are stamped run_started_at + their presentation time, so an "
                          "ingest restarted within a run (same run_id) gives its frames the same source_ts and event ids again; "
                          "`vigil run` sets it. None: the time each recording is opened.")
    report_path: Path | None = Field(None, description="Where ingest writes its per-camera end report as JSON when its sources end: frames sampled, "
                                                       "published (acknowledged by the broker) and dropped by reason, errors; owner-only, "
                                                       "written atomically (None: nowhere).")
    max_frame_pixels: int = Field(3840 * 2160, ge=4, le=IMAGE_PIXELS_CEILING,
                                  description="Frames with more pixels than this are downscaled (aspect kept) before publishing, after max_width; "
                                              "keep it within detect.max_frame_pixels, which refuses larger frames.")
    send_timeout_s: float = Field(30.0, gt=0, description="How long a send may wait for the broker's metadata or room in the producer's "
                                                          "buffer before it counts failed and the frame is sent again; also how long a stop "
                                                          "waits for unacknowledged frames. A send the producer took is retried until acknowledged.")
    max_unacked_frames: int = Field(32, ge=1, description="Frames per camera sent but not yet acknowledged by the broker; past it the camera's "
                                                          "publisher waits, so its queue fills and its backpressure policy applies.")
    resend_initial_s: float = Field(0.5, gt=0, description="First wait before a frame the broker did not acknowledge is sent again (same event id); "
                                                           "doubles per failure up to resend_max_s. Recordings retry until delivered (nothing is "
                                                           "lost in a broker outage: decoding waits); live cameras too, their queue dropping its oldest frames meanwhile.")
    resend_max_s: float = Field(10.0, gt=0, description="Upper bound of the wait between sends of an unacknowledged frame.")
    publish_outside_deployments: bool = Field(False, description="Publish frames of a camera that no active deployment covers (footage tools, ingest's "
                                                                 "own tests); detect and match ignore them all the same. False: such frames are dropped, counted.")


class FaceQualityOverrides(_Section):
    """One camera's quality limits; a field left unset keeps the section's default."""

    min_face_px: int | None = Field(None, ge=10, description="Minimum face box side in pixels (default: detect.min_face_px).")
    min_prob: float | None = Field(None, ge=0, le=1, description="Minimum detection probability (default: detect.min_prob).")
    min_sharpness: float | None = Field(None, ge=0, description="Minimum variance of the Laplacian of the grey crop (default: detect.quality.min_sharpness).")
    max_yaw_deg: float | None = Field(None, ge=0, le=90, description="Largest |yaw| in degrees (default: detect.quality.max_yaw_deg).")
    max_pitch_deg: float | None = Field(None, ge=0, le=90, description="Largest |pitch| in degrees (default: detect.quality.max_pitch_deg).")


class FaceQualitySettings(_Section):
    """The quality gate of the detect stage: faces failing it are counted (vigil_faces_rejected_total) and not published.

    Size and probability limits default to ``detect.min_face_px`` and ``detect.min_prob``; ``per_camera``
    overrides any limit for one camera.
    """

    min_sharpness: float = Field(15.0, ge=0, description="Minimum variance of the Laplacian of the grey-level crop (blur); sharp crops measure 50 to several hundred.")
    max_yaw_deg: float = Field(45.0, ge=0, le=90, description="Largest |yaw| in degrees, estimated from the five landmarks.")
    max_pitch_deg: float = Field(35.0, ge=0, le=90, description="Largest |pitch| in degrees, estimated from the five landmarks.")
    per_camera: dict[str, FaceQualityOverrides] = Field(default_factory=dict, description="Camera id -> the limits that camera overrides.")


class DetectSettings(_Section):
    batch_size: int = Field(8, ge=1, description="Frames per detector batch.")
    batch_wait_s: float = Field(0.01, ge=0, description="Longest wait to fill a batch: under load batches fill at once, when idle every event waits up to this (BENCHMARKS.md).")
    min_prob: float = Field(0.95, ge=0, le=1, description="Minimum detection probability (the stage's quality gate default; per-camera overrides in quality.per_camera).")
    min_face_px: int = Field(40, ge=10, description="Minimum face box side in pixels (the quality gate default; the stage's detector searches down to the smallest limit of any camera).")
    detect_face_px: int = Field(20, ge=12, description="MTCNN runs on the frame downscaled (never upscaled) so that a face of min_face_px measures this many pixels; "
                                                       "crops are still cut from the full-resolution frame (speed and accuracy in BENCHMARKS.md).")
    crop_size: int = Field(160, description="Side of the face crop, the box widened by crop_margin (the embedder's input).")
    crop_margin: int = Field(32, ge=0, description="Margin around the box, in crop pixels; the FaceNet weights need one (detect/model.py).")
    quality: FaceQualitySettings = Field(default_factory=FaceQualitySettings, description="Quality gate: blur and pose limits, per-camera overrides.")
    max_frame_pixels: int = Field(4096 * 4096, ge=4, le=IMAGE_PIXELS_CEILING,
                                  description="Frames whose JPEG header declares more pixels than this are dead-lettered before decoding "
                                              "(a decompression bomb: a few KiB that decode to gigabytes); 4K UHD is 8.3 MP.")
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest frame JPEG accepted, inline or fetched from the frames bucket; "
                                                                       "larger ones are dead-lettered unread.")


class EmbedSettings(_Section):
    batch_size: int = Field(32, ge=1, description="Faces per embedder batch: the most the stage takes at once and the most one model call sees.")
    batch_wait_s: float = Field(0.01, ge=0, description="Longest wait to fill a batch (see detect.batch_wait_s).")
    max_crop_pixels: int = Field(1024 * 1024, ge=4, le=IMAGE_PIXELS_CEILING,
                                 description="Face crops whose JPEG header declares more pixels than this are dead-lettered before decoding "
                                             "(detect makes detect.crop_size squared: 160 x 160 by default).")
    max_crop_bytes: int = Field(1024 * 1024, ge=1024, description="Largest crop JPEG accepted; larger ones are dead-lettered unread.")


class MatchSettings(_Section):
    threshold: float = Field(0.5, ge=-1, le=1, description="Cosine similarity at or above which a face matches a person; a track alerts when a person's aggregate score over it reaches this too.")
    batch_size: int = Field(64, ge=1, description="Embeddings per Milvus search batch.")
    batch_wait_s: float = Field(0.02, ge=0, description="Longest wait to fill a batch (see detect.batch_wait_s; a search takes a few ms).")
    search_k: int = Field(5, ge=1, le=100, description="Watchlist entries returned per face; each person's best among them is that face's score for the person.")
    min_track_faces: int = Field(2, ge=1, description="Faces of a track that must each reach the threshold for a person before the track can alert on that person.")
    track_gap_s: float = Field(2.0, gt=0, description="A track ends when its camera shows no face of it for this many seconds of source time.")
    track_similarity: float = Field(0.5, ge=-1, le=1, description="Cosine similarity to a track's mean embedding at which a face joins the track.")
    track_iou_bonus: float = Field(0.2, ge=0, le=1, description="How much overlap with the track's last box lowers that similarity: by this times the IoU.")
    max_tracks_per_camera: int = Field(32, ge=1, description="Open tracks held per (run, camera); the least recently seen is ended (reason evicted) beyond this.")
    track_idle_s: float = Field(10.0, gt=0, description="A track also ends when match has seen no face of its camera for this many seconds of wall time "
                                                       "(the camera went quiet, or its source ended), so its passers-by are forgotten.")


class EnrollSettings(_Section):
    max_expiry_days: float = Field(365.0, gt=0, description="Longest time an enrolment may last: every entry expires at most this many days after it was enrolled.")
    duplicate_similarity: float = Field(0.92, ge=-1, le=1, description="An enrolment photo at least this similar (cosine) to a face already enrolled, or to another photo of the same request, "
                                                                      "is refused as a near-duplicate that would weigh one picture twice (BENCHMARKS.md).")


class ConsoleSettings(_Section):
    """The review console (``vigil console``): its address, users, sessions and trusted proxies."""

    host: str = Field("127.0.0.1", description="Address the console listens on (loopback by default; 0.0.0.0 in a container).")
    port: int = Field(8080, ge=0, le=65535, description="Port of the console's web page and API (0 picks a free one).")
    state_dir: Path | None = Field(None, description="Owner-only folder of the console's users (users.json, argon2 hashes) and pending "
                                                     "watchlist proposals (a volume in Kubernetes; None: <VIGIL_HOME>/console).")
    session_ttl_s: float = Field(8 * 3600, gt=0, description="A login session expires this many seconds after it began.")
    login_max_failures: int = Field(5, ge=1, description="Failed logins allowed per client address and per user name within login_window_s; more are refused (429).")
    login_window_s: float = Field(300.0, gt=0, description="The window of login_max_failures, in seconds.")
    secure_cookies: bool | None = Field(None, description="Mark the session cookie Secure (true behind TLS); None: when the request came over https.")
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses or CIDR ranges of reverse proxies whose identity header is "
                                                                       "believed (and whose X-Forwarded-* headers uvicorn honours); empty: none.")
    proxy_user_header: str = Field("Remote-User", description="Header in which a trusted proxy names the authenticated user; the user must "
                                                              "exist in the users file, whose roles apply.")
    confirmations: int = Field(2, ge=2, description="Confirmations by different reviewers that make an alert confirmed (at least two: EU AI Act Art. 14(5)).")


class AuditSettings(_Section):
    """The audit log (docs/accountability.md): fail-closed appends, the sequencer's chain, its anchor in S3."""

    deliver_timeout_s: float = Field(15.0, gt=0, description="How long an action waits for its audit request to be acknowledged by every in-sync "
                                                             "replica; past it the action does not happen (fail closed).")
    anchor_bucket: str = Field("vigil-audit", description="Bucket (created with S3 Object Lock) where the sequencer anchors the chain head.")
    anchor_interval_s: float = Field(300.0, gt=0, description="The sequencer writes the chain head to the anchor bucket at most this often (and when it stops).")
    anchor_lock_days: int = Field(3650, ge=1, description="Object Lock (COMPLIANCE) retention of each anchor, in days.")
    batch_size: int = Field(100, ge=1, description="Requests the audit stage (the sequencer) seals per batch.")
    batch_wait_s: float = Field(0.05, ge=0, description="Longest wait to fill a batch (see detect.batch_wait_s).")


class RetentionSettings(_Section):
    """How long Vigil keeps what it sees (docs/accountability.md); every deletion is audited with counts."""

    passerby_grace_s: float = Field(2.0, ge=0, description="Seconds after a face track ends before its transient frames and crops are deleted "
                                                           "(match deletes them; alert evidence was copied to alerts/ first).")
    transient_max_age_s: float = Field(900.0, gt=0, description="Backstop: transient evidence older than this is deleted whatever became of its "
                                                                "track (a crashed match, a dead-lettered face); a track longer than this loses its first evidence.")
    frames_max_age_s: float = Field(120.0, gt=0, description="Claim-check frames (frames bucket) older than this are deleted: detect reads them within seconds.")
    alert_evidence_days: float = Field(30.0, gt=0, description="Alert evidence (evidence bucket, alerts/) is deleted this many days after its capture hour.")
    sweep_interval_s: float = Field(60.0, gt=0, description="How often the housekeeper sweeps (the backstops above, alert evidence, expired watchlist "
                                                            "entries): the vigil-housekeep CronJob's schedule (whole minutes), `vigil housekeep --every`.")


class DeploymentSettings(_Section):
    run_window_h: float = Field(12.0, gt=0, description="Window of the deployment `vigil run` starts for its own run (it ends it when the run ends).")
    refresh_s: float = Field(0.5, gt=0, description="How often a stage's table of deployments polls the deployments topic for changes.")


class StageSettings(_Section):
    health_port: int = Field(8000, description="Port of /metrics, /healthz and /readyz (0 picks a free one).")
    log_level: str = Field("INFO", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="Structured JSON logs or plain text.")
    dependency_timeout_s: float = Field(300, gt=0, description="How long a stream stage retries an unavailable dependency (Kafka, S3, "
                                                                   "Milvus; backoff capped at 30 s, not-ready meanwhile) before it exits "
                                                                   "non-zero for a restart.")
    delivery_timeout_s: float = Field(30, gt=0, description="How long one delivery of a stream stage's outputs may wait for the "
                                                            "broker's acknowledgement before it counts as failed (and is retried).")
    batch_stall_s: float = Field(120, gt=0, description="Liveness fails when a batch is in hand this long without completing or "
                                                        "retrying (a hung model or client call).")
    shutdown_grace_s: float = Field(20, gt=0, description="On SIGTERM, how long the batch in hand may take to finish; past it the "
                                                          "stage exits without acknowledging it. Keep it well under the pod's "
                                                          "terminationGracePeriodSeconds.")
    topic_check_interval_s: float = Field(5, gt=0, description="How often a stream stage checks that the broker is reachable and its "
                                                               "topics exist (a broker that lost its data makes it exit for a restart).")


class VigilSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_", env_nested_delimiter="__", extra="forbid", hide_input_in_errors=True)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    detect: DetectSettings = Field(default_factory=DetectSettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    match: MatchSettings = Field(default_factory=MatchSettings)
    enroll: EnrollSettings = Field(default_factory=EnrollSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    deployments: DeploymentSettings = Field(default_factory=DeploymentSettings)
    stage: StageSettings = Field(default_factory=StageSettings)

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _name_unknown_keys(exc) from None

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return init_settings, _Env(settings_cls, env_settings), _YamlFiles(settings_cls)


def _name_unknown_keys(exc: ValidationError) -> ValidationError:
    """The same errors, each unknown key named with its section (pydantic says only "Extra inputs are not permitted")."""
    errors = []
    for error in exc.errors():
        if error["type"] == "extra_forbidden":
            *section, key = error["loc"]
            kind = (PydanticCustomError("unknown_setting", "unknown setting '{key}' in section '{section}'",
                                        {"key": str(key), "section": ".".join(map(str, section))})
                    if section else PydanticCustomError("unknown_setting", "unknown settings section '{key}'", {"key": str(key)}))
            errors.append({"type": kind, "loc": error["loc"], "input": error["input"]})
        else:
            errors.append({key: error[key] for key in ("type", "loc", "input", "ctx") if key in error})
    return ValidationError.from_exception_data(exc.title, errors, hide_input=True)


class _Env(PydanticBaseSettingsSource):
    """The environment, plus each ``VIGIL_<SECTION>__...`` variable of a section that does not exist.

    pydantic-settings skips those silently; passed on, validation refuses them like any unknown key.
    """

    def __init__(self, settings_cls, env):
        super().__init__(settings_cls)
        self.env = env

    def get_field_value(self, field, field_name):  # pragma: no cover - unused; __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data = self.env()
        prefix, delimiter = self.env.env_prefix.lower(), self.env.env_nested_delimiter
        for name, value in self.env.env_vars.items():
            name = name.lower()
            if name.startswith(prefix) and delimiter in name:
                section = name[len(prefix):].split(delimiter, 1)[0]
                if section not in self.settings_cls.model_fields:
                    data.setdefault(section, value)
        return data


class _YamlFiles(PydanticBaseSettingsSource):
    def get_field_value(self, field, field_name):  # pragma: no cover - unused; __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for path in config_files():
            data = yaml.safe_load(path.read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a mapping of settings sections")
            for section, values in data.items():
                if isinstance(values, dict):
                    merged.setdefault(section, {}).update(values)
                else:
                    merged[section] = values
        return merged


def load_settings(**overrides: Any) -> VigilSettings:
    return VigilSettings(**overrides)
