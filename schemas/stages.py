"""The stage topology: the one place that says which stages exist, what each reads and writes, and who runs it.

Beside the topic registry (``schemas.topics``), and read by everything that
needs the shape of the pipeline: the stream runtime (consumer groups and
topics), ``vigil stage`` (dispatch), ``vigil run`` (which stages to start, when
the pipeline has drained), the Kubernetes generator (KEDA triggers, and each
stage's Kafka ACLs: every topic a stage reads or writes is named here) and the
tests. Processors are named by import path so this module imports no stage
code (no torch, no clients).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from schemas.topics import (
    ALERTS,
    AUDIT,
    AUDIT_REQUESTS,
    DEAD_LETTERS,
    DEPLOYMENTS,
    EMBEDDINGS,
    FACES,
    FRAMES,
    MATCH_STATE,
    TRACKS,
    TopicSpec,
)


@dataclass(frozen=True)
class StageSpec:
    name: str
    entrypoint: str  # "module:Class": a StreamProcessor for stream stages, the service for ingest
    source: TopicSpec | None  # the topic it consumes; None for ingest, which reads cameras
    outputs: tuple[TopicSpec, ...]
    uses_models: bool  # runs torch models (shares the host's cores with the other model stages)
    lag_per_replica: int | None  # events waiting per replica that autoscaling aims for; None: not scaled on lag
    description: str
    reads: tuple[TopicSpec, ...] = ()  # side inputs read beside the source (tables such as the deployments), no group
    audits: bool = False  # appends audit requests (accountability.audit.AuditLog), e.g. for its retention deletes

    @property
    def consumer_group(self) -> str | None:
        """The Kafka consumer group (and faust app id) of a stream stage."""
        return f"vigil-{self.name}" if self.source else None

    @property
    def writes(self) -> tuple[TopicSpec, ...]:
        """Every topic the stage produces to: its outputs, and dead letters for a stream stage."""
        return self.outputs + ((DEAD_LETTERS,) if self.source else ())

    @property
    def topics_read(self) -> tuple[TopicSpec, ...]:
        """Every topic the stage reads: its source and its side inputs."""
        return ((self.source,) if self.source else ()) + self.reads

    @property
    def topics_written(self) -> tuple[TopicSpec, ...]:
        """Every topic the stage produces to: ``writes``, and the audit requests of a stage that audits."""
        return self.writes + ((AUDIT_REQUESTS,) if self.audits else ())

    def load(self) -> type:
        module, _, attr = self.entrypoint.partition(":")
        return getattr(importlib.import_module(module), attr)


INGEST = StageSpec(
    "ingest", "ingest.service:IngestService", None, (FRAMES,), uses_models=False, lag_per_replica=None,
    description="Decodes cameras and files, samples frames, records footage.",
    reads=(DEPLOYMENTS,), audits=True,  # frames outside every deployment are dropped; footage retention is audited
)
DETECT = StageSpec(
    "detect", "detect.stage:DetectProcessor", FRAMES, (FACES,), uses_models=True, lag_per_replica=50,
    description="Finds faces in frames (MTCNN) and applies the quality gate.",
    reads=(DEPLOYMENTS,),
)
EMBED = StageSpec(
    "embed", "embed.stage:EmbedProcessor", FACES, (EMBEDDINGS,), uses_models=True, lag_per_replica=200,
    description="Turns face crops into 512-d embeddings (FaceNet).",
)
MATCH = StageSpec(
    "match", "match.stage:MatchProcessor", EMBEDDINGS, (ALERTS, TRACKS, MATCH_STATE), uses_models=False, lag_per_replica=500,
    description="Searches the watchlist, follows face tracks (their state in a changelog), raises alerts.",
    reads=(DEPLOYMENTS, MATCH_STATE), audits=True,  # an ended track's transient frames and crops are deleted, audited with counts
)

AUDIT_SEQUENCER = StageSpec(
    "audit", "accountability.sequencer:AuditSequencer", AUDIT_REQUESTS, (AUDIT,), uses_models=False, lag_per_replica=None,
    description="Seals audit requests into the hash-chained audit log (one active member: the topic has one partition).",
)

# In pipeline order: each stage's source is an output of a stage before it.
PIPELINE_STAGES: tuple[StageSpec, ...] = (INGEST, DETECT, EMBED, MATCH)
# Beside the pipeline: its source is written by every actor (CLI, console, stages), not by a stage's outputs.
ALL_STAGES: tuple[StageSpec, ...] = (*PIPELINE_STAGES, AUDIT_SEQUENCER)
BY_NAME = {s.name: s for s in ALL_STAGES}
STREAM_STAGES: tuple[StageSpec, ...] = tuple(s for s in ALL_STAGES if s.source)
PIPELINE_STREAM_STAGES: tuple[StageSpec, ...] = tuple(s for s in PIPELINE_STAGES if s.source)


def producer_of(topic: TopicSpec) -> StageSpec:
    """The stage that writes ``topic`` as an output."""
    for stage in ALL_STAGES:
        if topic in stage.outputs:
            return stage
    raise KeyError(f"no stage produces {topic.name}")
