"""Typed settings: the one way to configure Vigil.

Sources, strongest first: explicit arguments, environment variables
(``VIGIL_<SECTION>__<FIELD>``, e.g. ``VIGIL_KAFKA__BOOTSTRAP=broker:9092``),
then YAML files. The files are those listed in ``VIGIL_CONFIG`` (separated by
``:``); when it is unset, the local stack's file ``$VIGIL_HOME/stack.yaml``
is read if ``vigil up`` wrote one. Every field carries its own description so
the docs can be generated from the models (``vigil config``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


def vigil_home() -> Path:
    """Where local state lives (stack endpoints, service data, models)."""
    return Path(os.environ.get("VIGIL_HOME", ".vigil")).resolve()


def config_files() -> list[Path]:
    listed = os.environ.get("VIGIL_CONFIG")
    if listed:
        return [Path(p) for p in listed.split(os.pathsep) if p]
    stack_file = vigil_home() / "stack.yaml"
    return [stack_file] if stack_file.exists() else []


class KafkaSettings(BaseModel):
    bootstrap: str = Field("127.0.0.1:9092", description="Comma-separated bootstrap servers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field("PLAINTEXT", description="Kafka security protocol.")
    sasl_mechanism: str | None = Field(None, description="SASL mechanism, e.g. SCRAM-SHA-512.")
    sasl_username: str | None = Field(None, description="SASL user.")
    sasl_password: str | None = Field(None, description="SASL password.")
    replication_factor: int = Field(1, description="Replication factor for topics Vigil creates (3 in production).")
    partitions: int | None = Field(None, description="Override the registry's partition count for every topic (tests).")
    session_timeout_s: float = Field(10.0, description="Consumer group session timeout.")
    heartbeat_interval_s: float = Field(3.0, description="Consumer group heartbeat interval.")
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = Field("gzip", description="Producer compression.")


class S3Settings(BaseModel):
    endpoint: str = Field("127.0.0.1:8333", description="host:port of the S3 API.")
    access_key: str = Field("vigil", description="Access key.")
    secret_key: str = Field("vigil-secret", description="Secret key.")
    secure: bool = Field(False, description="Use TLS.")
    region: str | None = Field(None, description="Region, when the server needs one.")
    evidence_bucket: str = Field("vigil-evidence", description="Snapshots and crops: transient/ for every face, alerts/ for hits.")
    frames_bucket: str = Field("vigil-frames", description="Frames sent by reference (claim-check).")
    footage_bucket: str = Field("vigil-footage", description="Recorded footage segments.")
    watchlist_bucket: str = Field("vigil-watchlist", description="Enrolment photos.")


class MilvusSettings(BaseModel):
    uri: str = Field("http://127.0.0.1:19530", description="Milvus URI (a cluster in production).")
    token: str | None = Field(None, description="Milvus token (user:password) when auth is on.")
    collection: str = Field("vigil_watchlist", description="Watchlist collection name.")
    index: Literal["FLAT", "HNSW"] = Field("HNSW", description="Vector index type.")
    hnsw_m: int = Field(16, description="HNSW M.")
    hnsw_ef_construction: int = Field(200, description="HNSW efConstruction.")
    hnsw_ef: int = Field(64, description="HNSW ef at search time.")


class ModelSettings(BaseModel):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when available.")
    weights_dir: Path = Field(Path("models"), description="Where set-up wrote the converted embedder weights.")
    torch_threads: int | None = Field(None, description="torch.set_num_threads; None leaves torch's default.")


class CameraSettings(BaseModel):
    id: str = Field(min_length=1, description="Camera id: the key of every event derived from it.")
    url: str = Field(description="File path, rtsp://, http(s):// URL.")
    target_fps: float | None = Field(None, gt=0, description="Overrides ingest.target_fps for this camera.")


class IngestSettings(BaseModel):
    cameras: list[CameraSettings] = Field(default_factory=list, description="Sources this ingest process reads.")
    target_fps: float = Field(5.0, gt=0, description="Frames per second to sample from each source.")
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality of published frames.")
    max_width: int | None = Field(1280, description="Downscale frames wider than this before publishing (None keeps size).")
    frame_transport: Literal["inline", "s3"] = Field("inline", description="inline: JPEG in the event; s3: JPEG in the frames bucket, key in the event.")
    realtime: bool = Field(False, description="Pace file sources at their native speed, as a live camera would.")


class DetectSettings(BaseModel):
    batch_size: int = Field(8, ge=1, description="Frames per detector batch.")
    batch_wait_s: float = Field(0.2, ge=0, description="Longest wait to fill a batch.")
    min_prob: float = Field(0.95, ge=0, le=1, description="Minimum detection probability.")
    min_face_px: int = Field(40, ge=10, description="Minimum face box side in pixels.")
    crop_size: int = Field(160, description="Aligned crop side (the embedder's input).")
    crop_margin: int = Field(32, ge=0, description="Margin around the box, in crop pixels (32-44 separates identities best).")


class EmbedSettings(BaseModel):
    batch_size: int = Field(32, ge=1, description="Faces per embedder batch.")
    batch_wait_s: float = Field(0.2, ge=0, description="Longest wait to fill a batch.")


class MatchSettings(BaseModel):
    threshold: float = Field(0.5, ge=-1, le=1, description="Cosine similarity at or above which a face matches a person.")
    batch_size: int = Field(64, ge=1, description="Embeddings per Milvus search batch.")
    batch_wait_s: float = Field(0.1, ge=0, description="Longest wait to fill a batch.")
    cooldown_s: float = Field(30.0, ge=0, description="Suppress repeat alerts for the same (camera, person) within this many seconds of source time.")


class StageSettings(BaseModel):
    health_port: int = Field(8000, description="Port of /metrics, /healthz and /readyz (0 picks a free one).")
    log_level: str = Field("INFO", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="Structured JSON logs or plain text.")


class VigilSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    detect: DetectSettings = Field(default_factory=DetectSettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    match: MatchSettings = Field(default_factory=MatchSettings)
    stage: StageSettings = Field(default_factory=StageSettings)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return init_settings, env_settings, _YamlFiles(settings_cls)


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
