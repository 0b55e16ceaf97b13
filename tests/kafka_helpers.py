"""Kafka helpers that only tests need."""

from __future__ import annotations

from kafka import KafkaProducer

from runtime.kafka import connection, kafka_python_config
from runtime.settings import KafkaSettings


def send_raw(settings: KafkaSettings, topic: str, value: bytes, key: bytes | None = None) -> None:
    """Produce arbitrary bytes, e.g. a malformed message on a topic."""
    producer = KafkaProducer(**kafka_python_config(connection(settings)))
    try:
        producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()
