"""The two Kafka moves every accountability record makes: written and acknowledged, or read to its end."""

from __future__ import annotations

import warnings

from runtime.kafka import BrokerUnavailable, EventProducer, EventReader, ReadEvent, ensure_topics
from runtime.settings import VigilSettings
from schemas.events import Envelope
from schemas.topics import TopicSpec

with warnings.catch_warnings():  # kafka-python 3 warns on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.errors import KafkaError


class NotRecorded(RuntimeError):
    """A record could not be written (and acknowledged) in time: the action it records must not happen."""


def record_producer(settings: VigilSettings, client_id: str) -> EventProducer:
    """A producer that gives up within ``audit.deliver_timeout_s`` (kafka-python blocks a minute by default)."""
    timeout_ms = int(settings.audit.deliver_timeout_s * 1000)
    try:
        ensure_topics(settings.kafka, timeout_s=settings.audit.deliver_timeout_s)
        return EventProducer(settings.kafka, client_id=client_id, linger_ms=0, max_block_ms=timeout_ms,
                             request_timeout_ms=timeout_ms)
    except (BrokerUnavailable, KafkaError) as exc:
        raise NotRecorded(f"Kafka at {settings.kafka.bootstrap} unreachable: {exc}") from exc


def deliver(producer: EventProducer, spec: TopicSpec, event: Envelope, timeout_s: float) -> None:
    """Send ``event`` and wait until every in-sync replica has it (acks=all), or raise ``NotRecorded``."""
    try:
        producer.send(spec, event).get(timeout=timeout_s)
    except KafkaError as exc:
        raise NotRecorded(f"{spec.name}: not acknowledged within {timeout_s:g} s ({type(exc).__name__}: {exc})") from exc


def read_all(settings: VigilSettings, spec: TopicSpec) -> list[ReadEvent]:
    """Every retained record of ``spec``, in offset order, up to its end as of the call."""
    ensure_topics(settings.kafka, [spec])
    with EventReader(settings.kafka, spec) as reader:
        return sorted(reader.read_to_end(), key=lambda r: (r.partition, r.offset))
