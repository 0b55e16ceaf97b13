"""The stage topology: every consumer of the pipeline's shape agrees with it (pure logic, no services)."""

from __future__ import annotations

import pytest

from runtime.stream import StreamProcessor
from schemas import stages, topics
from vigil.cli import build_parser


def test_topology_is_a_chain_in_pipeline_order():
    seen: set[str] = set()
    for stage in stages.PIPELINE_STAGES:
        if stage.source is not None:
            assert stage.source.name in seen, f"{stage.name} reads {stage.source.name}, which no earlier stage writes"
        seen.update(t.name for t in stage.outputs)
    assert topics.ALERTS.name in seen


def test_the_audit_stage_alone_writes_the_sealed_log_from_the_requests_everyone_writes():
    assert stages.ALL_STAGES == (*stages.PIPELINE_STAGES, stages.AUDIT_SEQUENCER)
    assert stages.AUDIT_SEQUENCER.source is topics.AUDIT_REQUESTS and stages.AUDIT_SEQUENCER.outputs == (topics.AUDIT,)
    assert [s for s in stages.ALL_STAGES if topics.AUDIT in s.outputs] == [stages.AUDIT_SEQUENCER]
    assert topics.AUDIT_REQUESTS.partitions == topics.AUDIT.partitions == 1  # one total order, one active sequencer
    assert stages.PIPELINE_STREAM_STAGES == tuple(s for s in stages.STREAM_STAGES if s is not stages.AUDIT_SEQUENCER)


def test_face_topics_keep_minutes_in_short_segments_and_the_audit_for_ever():
    for topic in (topics.FRAMES, topics.FACES, topics.EMBEDDINGS):
        assert topic.retention_ms <= 15 * topics.MINUTE_MS and int(topic.configs["segment.ms"]) <= topic.retention_ms
    assert topics.DEAD_LETTERS.retention_ms <= topics.HOUR_MS and "segment.ms" in topics.DEAD_LETTERS.configs
    assert topics.AUDIT.retention_ms == topics.AUDIT_REQUESTS.retention_ms == -1
    assert topics.DEPLOYMENTS.cleanup_policy == "compact"


def test_topics_of_the_topology_are_registered_and_written_once():
    outputs = [t.name for s in stages.ALL_STAGES for t in s.outputs]
    assert len(outputs) == len(set(outputs)), "two stages write the same output topic"
    for stage in stages.ALL_STAGES:
        for topic in (*stage.topics_read, *stage.topics_written):
            assert topics.BY_NAME[topic.name] is topic


def test_side_inputs_and_audit_requests_are_beside_the_stream():
    """``writes`` is what the stream runtime produces to (outputs, dead letters); audit requests go through the audit
    log's own producer, and side inputs are read without the stage's consumer group."""
    for stage in stages.ALL_STAGES:
        assert stage.writes == stage.outputs + ((topics.DEAD_LETTERS,) if stage.source else ())
        assert topics.AUDIT_REQUESTS not in stage.writes
        assert stage.topics_written == stage.writes + ((topics.AUDIT_REQUESTS,) if stage.audits else ())
        assert stage.topics_read == ((stage.source,) if stage.source else ()) + stage.reads
        assert stage.source not in stage.reads
        # The one topic a stage both writes and reads is its own changelog (match's track state).
        assert set(stage.reads) & set(stage.topics_written) == ({topics.MATCH_STATE} if stage is stages.MATCH else set())
    assert stages.MATCH.audits and stages.MATCH.reads == (topics.DEPLOYMENTS, topics.MATCH_STATE)
    assert not stages.AUDIT_SEQUENCER.audits  # it seals the requests, it does not add to them


def test_consumer_groups_are_unique_and_only_for_stream_stages():
    groups = [s.consumer_group for s in stages.STREAM_STAGES]
    assert len(set(groups)) == len(groups) and all(groups)
    assert stages.INGEST.consumer_group is None and stages.INGEST not in stages.STREAM_STAGES


@pytest.mark.parametrize("stage", stages.STREAM_STAGES, ids=lambda s: s.name)
def test_each_stream_stage_runs_the_processor_that_names_it(stage):
    processor = stage.load()
    assert issubclass(processor, StreamProcessor)
    assert processor.stage is stage


def test_ingest_entrypoint_is_the_ingest_service():
    from ingest.service import IngestService

    assert stages.INGEST.load() is IngestService


def test_producer_of_each_stage_source():
    for stage in stages.PIPELINE_STREAM_STAGES:
        assert stage.source in stages.producer_of(stage.source).outputs
    with pytest.raises(KeyError, match="no stage produces"):
        stages.producer_of(topics.AUDIT_REQUESTS)


def test_cli_offers_exactly_the_registered_stages():
    parser = build_parser()
    for stage in stages.ALL_STAGES:
        assert parser.parse_args(["stage", stage.name]).name == stage.name
    with pytest.raises(SystemExit):
        parser.parse_args(["stage", "recognise"])
