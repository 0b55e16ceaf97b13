"""Every overlay's configuration, exercised: each stage's real clients, built from its rendered settings, against the local stack.

For each kustomization and each stage Deployment in it, the stage's effective settings are read from the
rendered manifests (ConfigMaps, Secret literals, env) exactly as the pod would get them. Only where the
services are and how to log in (addresses, security protocol, credentials) are swapped for the local
stack's; everything else (compression, timeouts, buckets, collection, index) is the overlay's. Then the
clients the stages build are built from those settings and used once: kafka-python's producer and
reader (``EventProducer``, ``EventReader``), faust's producer and aiokafka consumer as
``runtime.stream.build_app`` configures them, the S3 store and the Milvus watchlist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid

import pytest
from aiokafka import TopicPartition

from runtime.kafka import EventProducer, EventReader, ensure_topics
from runtime.settings import VigilSettings
from runtime.stream import build_app
from schemas.events import DeadLetterEvent, utc_now
from schemas.stages import BY_NAME
from schemas.topics import DEAD_LETTERS
from storage.objects import ObjectStore
from storage.vectors import Watchlist
from tests.ingest.conftest import tansu_available, tansu_broker
from tests.k8s.manifests import KUSTOMIZATIONS, config_env, render, stage_deployments, stage_of

pytestmark = [pytest.mark.services, pytest.mark.slow]

# The only settings taken from the local stack: where the services are and how to log in.
SWAPPED = {
    "kafka": ("bootstrap", "security_protocol", "ssl_cafile", "sasl_mechanism", "sasl_username", "sasl_password"),
    "s3": ("endpoint", "access_key", "secret_key", "secure", "region"),
    "milvus": ("uri", "token"),
}
# A login the rendered manifests leave to a Secret created out of band (production), so that the settings validate.
PLACEHOLDER_LOGIN = {"VIGIL_KAFKA__SASL_USERNAME": "from-the-secret", "VIGIL_KAFKA__SASL_PASSWORD": "from-the-secret"}


def overlay_settings(env: dict[str, str], monkeypatch, tmp_path) -> VigilSettings:
    """The settings a pod with this environment loads (no config file, no other VIGIL_* variable)."""
    with monkeypatch.context() as m:
        for key in [k for k in os.environ if k.startswith("VIGIL_")]:
            m.delenv(key)
        m.setenv("VIGIL_HOME", str(tmp_path))
        for key, value in {**PLACEHOLDER_LOGIN, **env}.items():
            if key.startswith("VIGIL_"):
                m.setenv(key, value)
        return VigilSettings()


def with_local_services(settings: VigilSettings, local: VigilSettings) -> VigilSettings:
    update = {section: getattr(settings, section).model_copy(update={f: getattr(getattr(local, section), f) for f in fields})
              for section, fields in SWAPPED.items()}
    return settings.model_copy(update=update)


def cases() -> list[tuple[str, str]]:
    return [(name, stage) for name in KUSTOMIZATIONS for stage in sorted(BY_NAME)]


def stage_settings(kustomization: str, stage: str, local: VigilSettings, monkeypatch, tmp_path) -> VigilSettings:
    docs = render(kustomization)
    deployments = [d for d in stage_deployments(docs) if stage_of(d) == stage]
    assert deployments, f"{kustomization}: no Deployment runs {stage}"
    return with_local_services(overlay_settings(config_env(docs, deployments[0]), monkeypatch, tmp_path), local)


def kafka_python_round_trip(settings: VigilSettings, spec, event) -> None:
    """kafka-python, as ingest, enrolment and the readers use it: admin, idempotent producer, reader."""
    ensure_topics(settings.kafka, [spec])
    producer = EventProducer(settings.kafka, client_id="overlay-check")
    try:
        producer.send(spec, event).get(timeout=30)
    finally:
        producer.close()
    with EventReader(settings.kafka, spec) as reader:
        for read in reader.follow(idle_timeout_s=15):
            if read.event is not None and read.event.event_id == event.event_id:
                return
    pytest.fail(f"kafka-python reader never saw {event.event_id} on {spec.name}")


async def faust_round_trip(settings: VigilSettings, group: str, spec, event) -> None:
    """faust's producer and its worker consumer (aiokafka), configured as a stream stage's app is."""
    app = build_app(group, settings)
    producer = app.producer._new_producer()
    await producer.start()
    try:
        metadata = await producer.send_and_wait(spec.name, spec.encode(event), key=event.camera_id.encode())
    finally:
        await producer.stop()
    consumer = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)
    await consumer.start()
    try:
        tp = TopicPartition(spec.name, metadata.partition)
        consumer.assign([tp])
        consumer.seek(tp, metadata.offset)
        records = await consumer.getmany(tp, timeout_ms=15_000)
        assert [r.value for r in records.get(tp, [])][:1] == [spec.encode(event)], "faust's consumer did not read the record back"
        await consumer.commit({tp: metadata.offset + 1})  # as a stage acknowledges a batch, in its own group
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def local(stack, tmp_path_factory):
    """The local stack's S3 and Milvus, and a broker of this module's own: the stages' consumer groups on the session's
    broker carry members of other tests' stage processes, and a commit in a group that another member holds is refused."""
    if not tansu_available():
        yield stack.settings
        return
    with tansu_broker(tmp_path_factory.mktemp("overlay-kafka")) as kafka:
        yield stack.settings.model_copy(update={"kafka": kafka})


@pytest.mark.parametrize(("kustomization", "stage"), cases())
def test_stage_clients_work_with_the_overlay_settings(kustomization, stage, local, monkeypatch, tmp_path):
    spec_of_stage = BY_NAME[stage]
    settings = stage_settings(kustomization, stage, local, monkeypatch, tmp_path)
    # A topic of the test's own, with the dead-letter contract: the stages' topics in the session stack stay untouched.
    spec = dataclasses.replace(DEAD_LETTERS, name=f"test.overlay.{uuid.uuid4().hex[:8]}", partitions=1)
    event = DeadLetterEvent(camera_id="cam-overlay", source_ts=utc_now(), trace_id="t", stage=stage,
                            source_topic=spec.name, error="overlay check", payload=b"x")

    kafka_python_round_trip(settings, spec, event)
    asyncio.run(faust_round_trip(settings, spec_of_stage.consumer_group or f"vigil-{stage}", spec, event))

    store = ObjectStore(settings.s3)
    store.ensure_buckets()
    key = f"overlay-check/{uuid.uuid4().hex}"
    store.put_bytes(settings.s3.evidence_bucket, key, b"x", "application/octet-stream")
    assert store.get_bytes(settings.s3.evidence_bucket, key) == b"x"

    with Watchlist(settings.milvus) as watchlist:
        watchlist.ensure_collection()
        assert watchlist.count() >= 0
