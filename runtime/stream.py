"""The stream stage runtime: consume -> batch -> process -> produce -> commit, on faust-streaming.

A stage is a ``StreamProcessor``: a function from a batch of validated input
events to output events, plus its settings. It never touches Kafka. The
runtime owns the rest:

- topics are created from the registry at start-up (kafka-python admin);
- events are read in batches with faust's ``take_events(max, within)``, so a
  GPU sees full batches under load and short waits when idle;
- a payload that fails validation, or that the processor refuses with
  ``BadEvent``, goes to the dead-letter topic with the reason and its original
  bytes, and the rest of the batch carries on;
- a failure of a dependency (S3, Milvus, the broker: ``OSError``, which
  includes ``ConnectionError``, and the client libraries' own network errors)
  is retried with capped backoff and the stage reports not-ready meanwhile,
  so an outage delays events instead of dropping them;
- outputs are delivered (awaited, acks=all) before the batch's offsets are
  acknowledged, so an accepted event is never committed without its results.
  That is at-least-once: a retry may repeat an output, so every id derived
  after ingest is deterministic (face, embedding and alert ids) and consumers
  deduplicate on it. (faust turns producer idempotence on only inside
  transactions, which the local broker lacks.)
- the processor runs in a worker thread so heartbeats and probes carry on
  while a model is busy; SIGTERM lets the batch in hand finish, then commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import ClassVar

import faust
from pydantic import ValidationError

from runtime import metrics
from runtime.health import Health, serve_health
from runtime.kafka import connection, describe_error, ensure_topics, faust_credentials, headers
from runtime.logs import configure_logging
from runtime.settings import VigilSettings, vigil_home
from schemas.events import DeadLetterEvent, Envelope, utc_now
from schemas.stages import StageSpec
from schemas.topics import DEAD_LETTERS, TopicSpec

log = logging.getLogger(__name__)

Output = tuple[TopicSpec, Envelope]


class BadEvent(Exception):
    """The event itself cannot be processed (corrupt image, impossible values): dead-letter it."""


class StreamProcessor(ABC):
    """One stream stage's logic. Subclasses set ``stage``, their entry in the stage topology (``schemas.stages``)."""

    stage: ClassVar[StageSpec]

    def __init__(self, settings: VigilSettings):
        self.settings = settings

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def batch_size(self) -> int:
        """From the stage's own settings section (``settings.<name>.batch_size``)."""
        return getattr(self.settings, self.name).batch_size

    @property
    def batch_wait_s(self) -> float:
        return getattr(self.settings, self.name).batch_wait_s

    def start(self) -> None:
        """Load models and connect to storage. Runs in the worker thread before the first batch."""

    @abstractmethod
    def process(self, events: list[Envelope]) -> list[Output]:
        """Turn a batch of valid input events into output events."""

    def stop(self) -> None:
        """Release resources."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError)


def _transient_errors() -> tuple[type[BaseException], ...]:
    # Client libraries wrap connection failures in their own types.
    errors = list(TRANSIENT_ERRORS)
    try:
        from urllib3.exceptions import HTTPError as Urllib3Error

        errors.append(Urllib3Error)
    except ImportError:  # pragma: no cover
        pass
    try:
        from pymilvus.exceptions import MilvusException

        errors.append(MilvusException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def build_app(app_id: str, settings: VigilSettings) -> faust.App:
    kafka = settings.kafka
    conn = connection(kafka)
    # faust keeps a data folder even with in-memory tables; by default it lands in the current folder.
    datadir = vigil_home() / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=[f"kafka://{host}" for host in conn.bootstrap],
        broker_credentials=faust_credentials(conn),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_allow_declare=False,  # topics come from the registry (ensure_topics), with its configs
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        producer_acks=-1,  # all in-sync replicas
        producer_compression_type=None if kafka.compression == "none" else kafka.compression,
        producer_max_request_size=8 * 1024 * 1024,
        consumer_max_fetch_size=8 * 1024 * 1024,
        store="memory://",
        datadir=str(datadir / app_id),
    )
    app.transport.Consumer = _consumer_class(kafka.fetch_max_wait_ms)
    return app


def _consumer_class(fetch_max_wait_ms: int):
    """faust's aiokafka consumer with ``fetch_max_wait_ms`` (faust hard-codes 1500 ms).

    Apache Kafka answers a waiting fetch as soon as data arrives, but Tansu holds
    it for the whole wait: at 1500 ms each hop between stages added ~0.4 s.
    """
    from faust.transport.drivers import aiokafka as driver

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport):
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read when the consumer starts its fetcher
            return consumer

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self):
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    return Consumer


class StreamStage:
    """Runs one ``StreamProcessor`` as a faust worker."""

    def __init__(self, processor: StreamProcessor, settings: VigilSettings):
        self.processor = processor
        self.settings = settings
        self.spec = processor.stage
        self.name = self.spec.name
        self.health = Health(self.name)
        self.app = build_app(self.spec.consumer_group, settings)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-worker")
        self._transient = _transient_errors()
        self._topics = {topic.name: self.app.topic(topic.name) for topic in (self.spec.source, *self.spec.writes)}
        self._started = False
        self._wire()

    # -- faust wiring -------------------------------------------------------------------------
    def _wire(self) -> None:
        app, processor = self.app, self.processor
        source = self._topics[self.spec.source.name]

        @app.agent(source, name=f"{self.name}-agent")
        async def agent(stream):
            async for events in stream.take_events(processor.batch_size, within=processor.batch_wait_s):
                task = asyncio.ensure_future(self._handle_batch(list(events)))
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    # Shutting down: finish the batch in hand so its results exist before its offsets commit.
                    await asyncio.wait_for(task, timeout=60)
                    raise

        @app.timer(interval=2.0)
        async def heartbeat():
            self.health.beat()

        @app.task
        async def start_processor():
            await self._in_worker(self.processor.start)
            self._started = True
            self.health.set_ready(True)
            log.info("stage started", extra={"source": self.spec.source.name, "batch_size": processor.batch_size})

    async def _in_worker(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- one batch ----------------------------------------------------------------------------
    async def _handle_batch(self, raw_events: list) -> None:
        while not self._started:  # models still loading
            await asyncio.sleep(0.1)
        source = self.spec.source
        valid: list[tuple[object, Envelope]] = []
        for raw in raw_events:
            try:
                valid.append((raw, source.decode(raw.message.value)))
            except (ValidationError, ValueError) as exc:
                await self._dead_letter(raw, f"malformed {source.event.__name__}: {describe_error(exc)}", "malformed")
                metrics.EVENTS_IN.labels(self.name, source.name).inc()
        if not valid:
            return
        metrics.BATCH_SIZE.labels(self.name).observe(len(valid))
        outputs = await self._process_with_retry(valid)
        await self._deliver(outputs)
        now = datetime.now(timezone.utc)
        for _, event in valid:
            metrics.LAG_SECONDS.labels(self.name).observe(max(0.0, (now - event.source_ts).total_seconds()))
        metrics.LAST_BATCH_DONE.labels(self.name).set(now.timestamp())
        # Counted only now, outputs delivered: "in >= upstream out" then means drained (vigil run relies on it).
        metrics.EVENTS_IN.labels(self.name, source.name).inc(len(valid))

    async def _process_with_retry(self, valid: list[tuple[object, Envelope]]) -> list[Output]:
        events = [event for _, event in valid]
        try:
            return await self._timed_process(events)
        except BadEvent:
            pass  # isolate the bad event(s) below
        except Exception as exc:  # noqa: BLE001 - classify, then isolate or retry
            if isinstance(exc, self._transient):
                return await self._retry_until_done(events, exc)
            log.warning("batch failed (%s); retrying its events one by one", describe_error(exc))
        outputs: list[Output] = []
        for raw, event in valid:  # one by one, so one poison event cannot hold back the rest
            try:
                outputs += await self._timed_process([event])
            except Exception as exc:  # noqa: BLE001
                if isinstance(exc, self._transient):
                    outputs += await self._retry_until_done([event], exc)
                else:
                    await self._dead_letter(raw, f"{self.name} refused the event: {describe_error(exc)}", type(exc).__name__)
        return outputs

    async def _retry_until_done(self, events: list[Envelope], first_error: Exception) -> list[Output]:
        delay, error = 0.5, first_error
        while True:
            self.health.set_ready(False, f"dependency unavailable: {describe_error(error)}")
            log.warning("dependency unavailable, retrying in %.1fs: %s", delay, describe_error(error))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            try:
                outputs = await self._timed_process(events)
                self.health.set_ready(True)
                return outputs
            except self._transient as exc:
                error = exc

    async def _timed_process(self, events: list[Envelope]) -> list[Output]:
        started = time.perf_counter()
        outputs = await self._in_worker(self.processor.process, events)
        metrics.PROCESS_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        return outputs

    async def _deliver(self, outputs: list[Output]) -> None:
        pending = []
        for spec, event in outputs:
            key = getattr(event, spec.key).encode()
            pending.append(await self._topics[spec.name].send(key=key, value=spec.encode(event), headers=headers(event)))
            metrics.EVENTS_OUT.labels(self.name, spec.name).inc()
        for fut in pending:  # delivered before the input offsets are acknowledged
            await fut

    async def _dead_letter(self, raw, error: str, reason: str) -> None:
        message = raw.message
        key = message.key.decode(errors="replace") if message.key else "unknown"
        letter = DeadLetterEvent(
            camera_id=key or "unknown", source_ts=utc_now(), trace_id=f"{message.topic}/{message.partition}/{message.offset}",
            stage=self.name, source_topic=message.topic, source_partition=message.partition, source_offset=message.offset,
            error=error, payload=message.value or b"",
        )
        log.error("dead-lettered an event: %s", error, extra={"topic": message.topic, "partition": message.partition, "offset": message.offset})
        await self._deliver([(DEAD_LETTERS, letter)])
        metrics.DEAD_LETTERS.labels(self.name, reason).inc()

    # -- lifecycle ----------------------------------------------------------------------------
    def run(self) -> None:
        """Blocks until SIGTERM/SIGINT."""
        stage = self.settings.stage
        configure_logging(self.name, stage.log_level, stage.log_format)
        ensure_topics(self.settings.kafka)
        server = serve_health(self.health, stage.health_port)
        log.info("health endpoints on port %d", server.server_port)
        self.health.set_ready(False, "loading")

        @self.app.on_before_shutdown.connect
        async def _stop(app, **kwargs):  # noqa: ANN001
            self.health.set_ready(False, "stopping")

        worker = faust.Worker(self.app, loglevel=stage.log_level, override_logging=False, redirect_stdouts=False, quiet=True)
        try:
            worker.execute_from_commandline()
        finally:
            self.processor.stop()
            self._executor.shutdown(wait=True)
            server.shutdown()
