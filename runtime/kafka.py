"""Thin wrappers over kafka-python: topic admin, an idempotent event producer, and a plain event reader.

kafka-python serves the plain clients (ingest's producer, topic admin, the
alerts follower, replay tools and tests). The stream stages consume through
faust-streaming instead (see ``runtime.stream``). Only this module and
``runtime.stream`` import Kafka clients.

``KafkaSettings`` are translated once, into a ``Connection`` that names no
client library; ``kafka_python_config`` and ``faust_credentials`` only spell
that for their library, so both reach the cluster the same way.
"""

from __future__ import annotations

import logging
import ssl
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import SecretStr, ValidationError

from runtime.settings import KafkaSettings
from schemas.events import Envelope
from schemas.topics import ALL_TOPICS, TopicSpec

with warnings.catch_warnings():  # kafka-python 3 warns on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError, TopicAuthorizationFailedError

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The Kafka cluster could not be reached in time."""


@dataclass(frozen=True)
class Connection:
    """How to reach the cluster, in no client library's terms."""

    bootstrap: tuple[str, ...]
    ssl_context: ssl.SSLContext | None  # TLS is on exactly when there is one
    sasl_mechanism: str | None  # a SASL login exactly when there is one
    sasl_username: str | None
    sasl_password: SecretStr | None = field(repr=False)

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    @property
    def sasl(self) -> bool:
        return self.sasl_mechanism is not None


def connection(settings: KafkaSettings) -> Connection:
    """The one translation of ``KafkaSettings``; the TLS context is built here, once for every client."""
    tls = settings.security_protocol in ("SSL", "SASL_SSL")
    sasl = settings.security_protocol.startswith("SASL_")  # validation made sure the login is complete
    return Connection(
        bootstrap=tuple(host.strip() for host in settings.bootstrap.split(",")),
        ssl_context=ssl.create_default_context(cafile=settings.ssl_cafile) if tls else None,
        sasl_mechanism=settings.sasl_mechanism if sasl else None,
        sasl_username=settings.sasl_username if sasl else None,
        sasl_password=settings.sasl_password if sasl else None,
    )


def kafka_python_config(conn: Connection) -> dict:
    """kafka-python's connection keyword arguments."""
    config = {
        "bootstrap_servers": list(conn.bootstrap),
        "security_protocol": ("SASL_" if conn.sasl else "") + ("SSL" if conn.tls else "PLAINTEXT"),
    }
    if conn.tls:
        config["ssl_context"] = conn.ssl_context
    if conn.sasl:
        config.update(sasl_mechanism=conn.sasl_mechanism, sasl_plain_username=conn.sasl_username,
                      sasl_plain_password=conn.sasl_password.get_secret_value())
    return config


def faust_credentials(conn: Connection):
    """faust's ``broker_credentials``: an SSL context alone for TLS, ``SASLCredentials`` for a login (with the context under TLS).

    faust's aiokafka driver derives aiokafka's ``security_protocol`` from them (``credentials_to_aiokafka_auth``).
    """
    if not conn.sasl:
        return conn.ssl_context
    from faust.auth import SASLCredentials

    return SASLCredentials(username=conn.sasl_username, password=conn.sasl_password.get_secret_value(),
                           mechanism=conn.sasl_mechanism, ssl_context=conn.ssl_context)


def ensure_topics(settings: KafkaSettings, specs: Iterable[TopicSpec] = ALL_TOPICS, *, timeout_s: float = 60) -> list[str]:
    """Create the registry's topics that do not exist yet; returns the names created.

    Retries until the broker answers (a stage may start before the broker),
    then raises ``BrokerUnavailable`` naming the bootstrap servers.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(**kafka_python_config(connection(settings)), request_timeout_ms=10_000)
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"Kafka at {settings.bootstrap} unreachable: {exc!r}") from exc
            log.warning("waiting for Kafka at %s: %r", settings.bootstrap, exc)
            time.sleep(1)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(
                name=spec.name,
                num_partitions=settings.partitions or spec.partitions,
                replication_factor=settings.replication_factor,
                topic_configs=spec.configs,
            )
            for spec in specs
            if spec.name not in existing
        ]
        created = []
        for topic in missing:  # one at a time: a concurrent creator must not fail the others
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
            except TopicAuthorizationFailedError:
                # A least-privilege principal may neither create a topic nor see the ones it does not use.
                log.warning("not authorised to create or see topic %s: it must be declared (a Strimzi KafkaTopic)", topic.name)
        if created:
            log.info("created topics %s", created)
        return created
    finally:
        admin.close()


def headers(event: Envelope) -> list[tuple[str, bytes]]:
    """The Kafka headers of an event: its contract, and its run for events of a replay or a `vigil run` (consumers of live
    events skip those); docs/consumers.md documents them."""
    out = [("vigil-event-type", event.event_type.encode()), ("vigil-schema-version", str(event.schema_version).encode())]
    if event.run_id is not None:
        out.append(("vigil-run-id", event.run_id.encode()))
    return out


class EventProducer:
    """Idempotent producer of registry events, keyed by camera id (one camera's events stay in order)."""

    def __init__(self, settings: KafkaSettings, *, client_id: str = "vigil", **overrides):
        options = dict(
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            compression_type=None if settings.compression == "none" else settings.compression,
            linger_ms=5,
            max_request_size=8 * 1024 * 1024,
        )
        options.update(overrides)
        try:
            self._producer = KafkaProducer(**kafka_python_config(connection(settings)), **options)
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka at {settings.bootstrap} unreachable: {exc!r}") from exc

    def send(self, spec: TopicSpec, event: Envelope):
        if not isinstance(event, spec.event):
            raise TypeError(f"{spec.name} carries {spec.event.__name__}, not {type(event).__name__}")
        key = getattr(event, spec.key).encode()
        return self._producer.send(spec.name, key=key, value=spec.encode(event), headers=headers(event))

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 30) -> None:
        self._producer.close(timeout=timeout_s)


@dataclass(frozen=True)
class ReadEvent:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    event: Envelope | None
    error: str | None
    raw: bytes


class EventReader:
    """Reads registry events from one topic: from the earliest offset, or from a point in time.

    It reads every partition by assignment (no consumer group, no commits):
    the shape a replay tool or a test wants.
    """

    def __init__(self, settings: KafkaSettings, spec: TopicSpec, *, since: datetime | None = None):
        self.spec = spec
        self._consumer = KafkaConsumer(**kafka_python_config(connection(settings)), enable_auto_commit=False,
                                       auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024)
        partitions = self._wait_for_partitions()
        self._consumer.assign(partitions)
        self._seek(partitions, since)

    def _wait_for_partitions(self, timeout_s: float = 30) -> list[TopicPartition]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ids = self._consumer.partitions_for_topic(self.spec.name)
            if ids:
                return [TopicPartition(self.spec.name, p) for p in sorted(ids)]
            time.sleep(0.2)
        raise BrokerUnavailable(f"topic {self.spec.name} has no partitions (does it exist?)")

    def _seek(self, partitions: list[TopicPartition], since: datetime | None) -> None:
        self._consumer.seek_to_beginning(*partitions)
        self._since_ms = int(since.timestamp() * 1000) if since else None
        if since is None:
            return
        # Time lookups are not trusted on every broker: fall back to scanning from
        # the start and filtering by timestamp (see ``read``).
        try:
            found = self._consumer.offsets_for_times({tp: self._since_ms for tp in partitions})
            for tp, offset_ts in found.items():
                if offset_ts is not None:
                    self._consumer.seek(tp, offset_ts.offset)
        except KafkaError as exc:
            log.warning("offsets_for_times failed (%r); scanning from the earliest offset", exc)

    def read(self, *, timeout_s: float = 1.0, max_records: int = 500) -> list[ReadEvent]:
        out: list[ReadEvent] = []
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        for records in batches.values():
            for record in records:
                if getattr(self, "_since_ms", None) and record.timestamp < self._since_ms:
                    continue
                try:
                    event, error = self.spec.decode(record.value), None
                except (ValidationError, ValueError) as exc:
                    event, error = None, describe_error(exc)
                out.append(ReadEvent(record.topic, record.partition, record.offset, record.timestamp, event, error, record.value))
        return out

    def at_end(self) -> bool:
        """Every partition read up to its end offset as of now: what was written before this call has been returned."""
        partitions = list(self._consumer.assignment())
        ends = self._consumer.end_offsets(partitions)
        return all(self._consumer.position(tp) >= ends[tp] for tp in partitions)

    def read_to_end(self, *, poll_s: float = 0.5) -> list[ReadEvent]:
        """Every record up to each partition's end as of now, in the order read."""
        out: list[ReadEvent] = []
        while True:
            batch = self.read(timeout_s=poll_s)
            out += batch
            if not batch and self.at_end():
                return out

    def follow(self, *, idle_timeout_s: float | None = None) -> Iterator[ReadEvent]:
        """Yield events as they arrive; stop after ``idle_timeout_s`` without any (None: never)."""
        idle_since = time.monotonic()
        while True:
            batch = self.read()
            if batch:
                idle_since = time.monotonic()
                yield from batch
            elif idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                return

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ConsumerLag:
    """How far consumer groups are behind the end of their topics, from the committed offsets (which survive a
    consumer's restart, unlike its own counters).

    The ends are found by reading: this follows each topic (raw records, nothing decoded) from the group's committed
    offsets, and a partition's end is the position after its last record. Some brokers (Tansu) answer ListOffsets
    with a wrong end when a batch holds several records.
    """

    def __init__(self, settings: KafkaSettings, topics: dict[str, str]):
        """``topics``: consumer group -> the topic it consumes."""
        config = kafka_python_config(connection(settings))
        self.topics = dict(topics)
        self._admin = KafkaAdminClient(**config, request_timeout_ms=10_000)
        # A short fetch wait: a broker that holds a fetch for its whole wait (Tansu) would hide new records that long.
        self._tail = KafkaConsumer(**config, enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                   max_partition_fetch_bytes=8 * 1024 * 1024)
        self._partitions: dict[str, list[TopicPartition]] = {}
        self._tail.assign([])

    def _assign(self) -> None:
        """Follow every partition of the topics (again when the broker lost them), from the lowest committed offset."""
        assigned = set(self._tail.assignment())
        for group, topic in self.topics.items():
            ids = self._tail.partitions_for_topic(topic) or set()
            partitions = [TopicPartition(topic, p) for p in sorted(ids)]
            self._partitions[group] = partitions
            new = [tp for tp in partitions if tp not in assigned]
            if new:
                self._tail.assign(sorted(assigned | set(new)))
                assigned |= set(new)
                committed = self._committed(group, new)
                for tp in new:
                    self._tail.seek(tp, committed[tp])

    def _committed(self, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        found = self._admin.list_group_offsets({group: partitions}).get(group, {})
        return {tp: max(0, found[tp].offset) if tp in found and found[tp].offset is not None else 0 for tp in partitions}

    def lag(self) -> dict[str, int]:
        """Group -> records of its topic it has not committed yet."""
        self._assign()
        while self._tail.poll(timeout_ms=300, max_records=10_000):  # up to the end as of now (a record in flight: next call)
            pass
        behind = {}
        for group, partitions in self._partitions.items():
            committed = self._committed(group, partitions)
            behind[group] = sum(max(0, self._tail.position(tp) - committed[tp]) for tp in partitions)
        return behind

    def close(self) -> None:
        self._tail.close()
        self._admin.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def describe_error(exc: Exception) -> str:
    """One line saying why a payload was refused (dead letters and logs)."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "payload"
        return f"{exc.error_count()} validation error(s); first at {where}: {first.get('msg')}"
    return f"{type(exc).__name__}: {exc}"
