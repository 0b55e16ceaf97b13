"""The stage topology: every consumer of the pipeline's shape agrees with it (pure logic, no services)."""

from __future__ import annotations

import pytest

from runtime.stream import StreamProcessor
from schemas import stages, topics
from vigil.cli import build_parser


def test_topology_is_a_chain_in_pipeline_order():
    seen: set[str] = set()
    for stage in stages.ALL_STAGES:
        if stage.source is not None:
            assert stage.source.name in seen, f"{stage.name} reads {stage.source.name}, which no earlier stage writes"
        seen.update(t.name for t in stage.outputs)
    assert topics.ALERTS.name in seen


def test_topics_of_the_topology_are_registered_and_written_once():
    outputs = [t.name for s in stages.ALL_STAGES for t in s.outputs]
    assert len(outputs) == len(set(outputs)), "two stages write the same output topic"
    for stage in stages.ALL_STAGES:
        for topic in (stage.source, *stage.writes):
            assert topic is None or topics.BY_NAME[topic.name] is topic


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
    for stage in stages.STREAM_STAGES:
        assert stage.source in stages.producer_of(stage.source).outputs
    with pytest.raises(KeyError, match="no stage produces"):
        stages.producer_of(topics.AUDIT)


def test_cli_offers_exactly_the_registered_stages():
    parser = build_parser()
    for stage in stages.ALL_STAGES:
        assert parser.parse_args(["stage", stage.name]).name == stage.name
    with pytest.raises(SystemExit):
        parser.parse_args(["stage", "recognise"])
