"""The stream stage runtime: consume -> batch -> process -> produce -> commit, on faust-streaming.

A stage is a ``StreamProcessor``: a function from a batch of validated input
events to output events, plus its settings. It never touches Kafka. The
runtime owns the rest, and keeps these promises under faults:

- **Nothing acknowledged without its outputs.** faust acknowledges a batch when
  the agent's body ends, even by an exception, so no exception leaves it: the
  outputs are delivered (acks=all, awaited; a failed delivery is retried with
  capped backoff), then ``checkpoint()``'s outputs (a stage's own state), and
  only then may the offsets commit. What cannot be delivered ends the process
  (``os._exit``, non-zero, one log line naming the cause) before faust can
  acknowledge anything, so the supervisor restarts it and the events come
  again. At-least-once: every id derived after ingest is deterministic and
  consumers deduplicate on it.
- **Errors classified** (``runtime.errors``): transient ones are retried with
  capped backoff, the stage not-ready and ``vigil_retries_total`` counting, up
  to ``stage.dependency_timeout_s``; permanent ones (credentials, privileges, a
  missing bucket or collection) make the stage not-ready and exit at once; an
  event's own fault (invalid payload, ``BadEvent``) dead-letters that event
  once, with the reason, its payload capped at 256 KiB with its size and
  SHA-256, and the rest of the batch carries on. Exit codes: ``ExitCode``.
- **Honest probes.** ``processor.start()`` (models, storage, Milvus) completes
  before the faust worker joins the consumer group; /healthz fails until then,
  when the main loop stops beating, or when a batch is in hand longer than
  ``stage.batch_stall_s`` without progress; /readyz is true only once started
  and while nothing is being retried.
- **Rebalances.** faust's revoke waits for the batch in hand to be acknowledged
  (``stream_wait_empty``); after each assignment ``processor.assigned()`` runs
  in the worker thread while the partitions are still paused, so before the
  next batch.
- **Shutdown.** SIGTERM lets the batch in hand finish within
  ``stage.shutdown_grace_s`` (below the pod's terminationGracePeriodSeconds),
  then commits; past it the stage exits without acknowledging the batch.
- **A broker that lost its data** (the local broker keeps topics in memory): a
  watchdog checks every ``stage.topic_check_interval_s`` that the broker
  answers and the stage's topics exist, and exits when one has vanished; the
  restart's ``ensure_topics`` recreates it.

The processor runs in one worker thread so heartbeats and probes carry on
while a model is busy.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import threading
import time
import warnings
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import ClassVar

import faust
from pydantic import ValidationError

from runtime import metrics
from runtime.errors import BadEvent, ExitCode, Kind, Verdict, classify
from runtime.health import Health, serve_health
from runtime.kafka import connection, describe_error, ensure_topics, faust_credentials, headers, kafka_python_config
from runtime.logs import configure_logging
from runtime.settings import VigilSettings, vigil_home
from schemas.events import DeadLetterEvent, Envelope, check_camera_id, utc_now
from schemas.stages import StageSpec
from schemas.topics import ALL_TOPICS, DEAD_LETTERS, TopicSpec

with warnings.catch_warnings():  # kafka-python 3 warns on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient

__all__ = ["BadEvent", "Output", "StreamProcessor", "StreamStage"]

log = logging.getLogger(__name__)

Output = tuple[TopicSpec, Envelope]

DEAD_LETTER_PAYLOAD_MAX = 256 * 1024  # bytes of the original value a dead letter keeps (its JSON is base64: ~342 KiB)
DEAD_LETTER_ERROR_MAX = 4096  # characters of the reason
INVALID_CAMERA_ID = "invalid-camera-id"  # a dead letter's camera when the message key is not a valid camera id
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 30.0


class StreamProcessor(ABC):
    """One stream stage's logic. Subclasses set ``stage``, their entry in the stage topology (``schemas.stages``).

    Every method runs in the stage's one worker thread. An exception is classified (``runtime.errors``): transient
    ones are retried, permanent ones stop the stage, and from ``process`` an event's fault (``BadEvent``, or an error
    no rule knows) dead-letters the event after the batch is retried one event at a time.
    """

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
        """Load models and connect to storage. Completes before the stage joins its consumer group."""

    def assigned(self) -> None:
        """After every partition (re)assignment of the stage's consumer, before the next batch (reload state here)."""

    @abstractmethod
    def process(self, events: list[Envelope]) -> list[Output]:
        """Turn a batch of valid input events into output events."""

    def checkpoint(self) -> list[Output]:
        """After the batch's outputs are delivered: outputs that record the processor's state (a changelog).

        They are delivered before the batch's offsets can be acknowledged, so state is never visible before the
        outputs it implies.
        """
        return []

    def has_pending(self) -> bool:
        """Outputs or state waiting without a batch to go out with (match's ended tracks): the runtime's tick then
        calls ``process([])`` and ``checkpoint()`` and delivers what they give, between batches."""
        return False

    def stop(self) -> None:
        """Release resources."""


class _Retry:
    """Capped exponential backoff for one operation, bounded by ``stage.dependency_timeout_s`` in all."""

    def __init__(self, stage: StreamStage, what: str):
        self.stage, self.what = stage, what
        self.delay = RETRY_FIRST_S
        self.deadline: float | None = None

    def next_delay(self, verdict: Verdict) -> float:
        """Seconds to wait before the next attempt; ends the process when the bound has passed."""
        timeout = self.stage.settings.stage.dependency_timeout_s
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + timeout
        if now >= self.deadline:
            self.stage.exit(ExitCode.UNAVAILABLE, f"{self.what}: {verdict.cause} still failing after {timeout:.0f}s: {verdict.detail}")
        metrics.RETRIES.labels(self.stage.name, verdict.cause).inc()
        self.stage.health.block("retry", f"retrying {self.what}: {verdict.cause}: {verdict.detail}")
        delay, self.delay = min(self.delay, self.deadline - now), min(self.delay * 2, RETRY_MAX_S)
        log.warning("%s failed (%s), retrying in %.1fs: %s", self.what, verdict.cause, delay, verdict.detail)
        return delay

    def done(self) -> None:
        if self.deadline is not None:
            self.stage.health.unblock("retry")


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
        producer_request_timeout=settings.stage.delivery_timeout_s,  # faust's default (20 min) would hide a failed delivery
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
        self.health = Health(self.name, stall_after_s=60, batch_stall_s=settings.stage.batch_stall_s, alive_while_starting=False)
        self.app = build_app(self.spec.consumer_group, settings)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-worker")
        self._topics = {topic.name: self.app.topic(topic.name) for topic in (self.spec.source, *self.spec.writes)}
        self._stopping = threading.Event()
        self._batch_lock = asyncio.Lock()  # a batch and a tick (StreamProcessor.has_pending) never interleave
        self._wire()

    def exit(self, code: ExitCode, line: str) -> None:
        """End the process now, from any thread, without acknowledging the batch in hand (faust would in its
        ``finally``): one log line naming the cause, logs flushed, then ``os._exit``."""
        self.health.set_ready(False, line)
        log.critical("%s; exiting with %d (%s)", line, int(code), code.name)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(code))

    # -- faust wiring -------------------------------------------------------------------------
    def _wire(self) -> None:
        app, processor = self.app, self.processor
        source = self._topics[self.spec.source.name]
        grace = self.settings.stage.shutdown_grace_s

        @app.agent(source, name=f"{self.name}-agent")
        async def agent(stream):
            async for events in stream.take_events(processor.batch_size, within=processor.batch_wait_s):
                # take_events acknowledges `events` when this body ends, however it ends: _guarded never raises
                # (what it cannot finish ends the process), and shutdown waits for it.
                task = asyncio.ensure_future(self._guarded(list(events)))
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    try:
                        await asyncio.wait_for(asyncio.shield(task), timeout=grace)
                    except asyncio.TimeoutError:
                        self.exit(ExitCode.SHUTDOWN_TIMEOUT,
                                  f"stopping: the batch in hand did not finish within stage.shutdown_grace_s={grace:g}s; "
                                  "left unacknowledged, it will be processed again")
                    raise

        @app.timer(interval=2.0)
        async def heartbeat():
            self.health.beat()

        @app.timer(interval=1.0)
        async def tick():
            if await self._in_worker(processor.has_pending):
                await self._guarded(None)

        @app.task
        async def ready():
            self.health.started()
            self.health.set_ready(True)
            log.info("stage started", extra={"source": self.spec.source.name, "batch_size": processor.batch_size})

        @app.on_partitions_assigned.connect
        async def on_assigned(app, assigned, **kwargs):  # noqa: ANN001
            # faust sends this with the new partitions still paused: the hook runs before any batch from them.
            await self._call("assigned()", processor.assigned, default=Kind.PERMANENT)

        @app.on_before_shutdown.connect
        async def on_stop(app, **kwargs):  # noqa: ANN001
            self._stopping.set()
            self.health.set_ready(False, "stopping")

    async def _in_worker(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _call(self, what: str, fn, *args, default: Kind):
        """``fn(*args)`` in the worker thread: transient errors retried, permanent ones end the process; an event
        error (or, with ``default=Kind.EVENT``, an error no rule knows) is raised for the caller to dead-letter."""
        retry = _Retry(self, what)
        while True:
            self.health.progress()
            try:
                result = await self._in_worker(fn, *args)
            except Exception as exc:  # noqa: BLE001 - classified
                verdict = classify(exc, default)
                if verdict.kind is Kind.EVENT:
                    retry.done()
                    raise
                if verdict.kind is Kind.PERMANENT:
                    self.exit(verdict.exit_code, f"{what}: permanent error ({verdict.cause}): {verdict.detail}")
                await asyncio.sleep(retry.next_delay(verdict))
            else:
                retry.done()
                return result

    # -- one batch ----------------------------------------------------------------------------
    async def _guarded(self, raw_events: list | None) -> None:
        """One batch, or (``None``) a tick; never both at once, so a checkpoint never overtakes a batch's outputs."""
        try:
            async with self._batch_lock:
                if raw_events is None:
                    await self._deliver(await self._call("process()", self.processor.process, [], default=Kind.PERMANENT))
                    await self._deliver(await self._call("checkpoint()", self.processor.checkpoint, default=Kind.PERMANENT))
                else:
                    await self._handle_batch(raw_events)
        except Exception as exc:  # noqa: BLE001 - nothing may leave the agent's body (faust would acknowledge)
            verdict = classify(exc, Kind.PERMANENT)
            code = verdict.exit_code if verdict.kind is not Kind.EVENT else ExitCode.INTERNAL
            log.exception("batch failed outside the processor's events")
            self.exit(code, f"a batch failed ({verdict.cause}): {verdict.detail}")

    async def _handle_batch(self, raw_events: list) -> None:
        self.health.batch_started()
        try:
            source = self.spec.source
            valid: list[tuple[object, Envelope]] = []
            for raw in raw_events:
                try:
                    valid.append((raw, source.decode(raw.message.value)))
                except (ValidationError, ValueError) as exc:
                    await self._dead_letter(raw, f"malformed {source.event.__name__}: {describe_error(exc)}", "malformed")
                    metrics.EVENTS_IN.labels(self.name, source.name).inc()
            if valid:
                metrics.BATCH_SIZE.labels(self.name).observe(len(valid))
                await self._deliver(await self._process(valid))
            await self._deliver(await self._call("checkpoint()", self.processor.checkpoint, default=Kind.PERMANENT))
            now = datetime.now(timezone.utc)
            for _, event in valid:
                metrics.LAG_SECONDS.labels(self.name).observe(max(0.0, (now - event.source_ts).total_seconds()))
            metrics.LAST_BATCH_DONE.labels(self.name).set(now.timestamp())
            # Counted only now, outputs delivered: "in >= upstream out" then means drained (vigil run relies on it).
            metrics.EVENTS_IN.labels(self.name, source.name).inc(len(valid))
        finally:
            self.health.batch_done()

    async def _process(self, valid: list[tuple[object, Envelope]]) -> list[Output]:
        try:
            return await self._call("process()", self._timed_process, [event for _, event in valid], default=Kind.EVENT)
        except Exception as exc:  # noqa: BLE001 - an event error: find the event(s) below
            if len(valid) > 1:
                log.warning("batch refused (%s); processing its events one by one", describe_error(exc))
        outputs: list[Output] = []
        for raw, event in valid:  # one by one, so one poison event cannot hold back the rest
            try:
                outputs += await self._call("process()", self._timed_process, [event], default=Kind.EVENT)
            except Exception as exc:  # noqa: BLE001 - an event error (_call ended the process for the others)
                verdict = classify(exc, Kind.EVENT)
                await self._dead_letter(raw, f"{self.name} refused the event: {verdict.detail}", verdict.cause)
        return outputs

    def _timed_process(self, events: list[Envelope]) -> list[Output]:
        started = time.perf_counter()
        outputs = self.processor.process(events)
        metrics.PROCESS_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        return outputs

    async def _deliver(self, outputs: list[Output]) -> None:
        """Send ``outputs`` and wait until the broker acknowledged every one; a transient failure sends them all
        again (consumers deduplicate on event ids), anything else ends the process."""
        if not outputs:
            return
        retry = _Retry(self, f"delivering {len(outputs)} output(s)")
        while True:
            self.health.progress()
            try:
                pending = []
                for spec, event in outputs:
                    key = getattr(event, spec.key).encode()
                    pending.append(await self._topics[spec.name].send(key=key, value=spec.encode(event), headers=headers(event)))
                for fut in pending:
                    await fut
            except Exception as exc:  # noqa: BLE001 - classified
                verdict = classify(exc, Kind.PERMANENT)
                if verdict.kind is not Kind.TRANSIENT:
                    topics = sorted({spec.name for spec, _ in outputs})
                    self.exit(verdict.exit_code, f"cannot deliver {len(outputs)} output(s) to {', '.join(topics)} "
                                                 f"({verdict.cause}): {verdict.detail}")
                await asyncio.sleep(retry.next_delay(verdict))
            else:
                retry.done()
                for spec, _ in outputs:
                    metrics.EVENTS_OUT.labels(self.name, spec.name).inc()
                return

    async def _dead_letter(self, raw, error: str, reason: str) -> None:
        message = raw.message
        value = message.value or b""
        key = (message.key or b"")[:256].decode(errors="replace")
        try:
            camera = check_camera_id(key)
        except ValueError:
            camera = INVALID_CAMERA_ID
            error = f"{error} [message key {key!r}]"  # repr: escaped, never a path
        where = f"{message.topic}/{message.partition}/{message.offset}"
        letter = DeadLetterEvent(
            # The same message dead-lettered again (a redelivery) gets the same id, so readers can deduplicate.
            event_id=hashlib.sha256(f"{self.name}/{where}".encode()).hexdigest()[:32],
            camera_id=camera, source_ts=utc_now(), trace_id=where,
            stage=self.name, source_topic=message.topic, source_partition=message.partition, source_offset=message.offset,
            error=error[:DEAD_LETTER_ERROR_MAX], payload=value[:DEAD_LETTER_PAYLOAD_MAX], payload_size=len(value),
            payload_sha256=hashlib.sha256(value).hexdigest(), payload_truncated=len(value) > DEAD_LETTER_PAYLOAD_MAX,
        )
        log.error("dead-lettered an event: %s", error[:1000], extra={"topic": message.topic, "partition": message.partition,
                                                                       "offset": message.offset, "reason": reason})
        await self._deliver([(DEAD_LETTERS, letter)])
        metrics.DEAD_LETTERS.labels(self.name, reason).inc()

    # -- the broker watchdog ------------------------------------------------------------------
    def _watch_topics(self) -> None:
        """In a daemon thread: exit when a topic of the stage has vanished, or the broker stays unreachable."""
        stage, kafka = self.settings.stage, self.settings.kafka
        names = [topic.name for topic in (self.spec.source, *self.spec.writes)]
        admin, unreachable_since = None, None
        while not self._stopping.wait(stage.topic_check_interval_s):
            try:
                if admin is None:
                    admin = KafkaAdminClient(**kafka_python_config(connection(kafka)), request_timeout_ms=10_000)
                existing = set(admin.list_topics())
            except Exception as exc:  # noqa: BLE001 - classified
                verdict = classify(exc, Kind.TRANSIENT)
                if verdict.kind is Kind.PERMANENT:
                    self.exit(verdict.exit_code, f"Kafka refused the stage ({verdict.cause}): {verdict.detail}")
                if admin is not None:
                    admin.close()
                admin = None
                unreachable_since = unreachable_since or time.monotonic()
                down_s = time.monotonic() - unreachable_since
                if down_s >= stage.dependency_timeout_s:
                    self.exit(ExitCode.UNAVAILABLE, f"Kafka at {kafka.bootstrap} unreachable for {down_s:.0f}s: {verdict.detail}")
                self.health.block("broker", f"Kafka at {kafka.bootstrap} unreachable: {verdict.detail}")
                metrics.RETRIES.labels(self.name, verdict.cause).inc()
                continue
            if unreachable_since is not None:
                unreachable_since = None
                self.health.unblock("broker")
            for name in names:
                if name not in existing:
                    self.exit(ExitCode.TOPIC_GONE, f"topic {name} is gone: the broker lost its data (restarted?); exiting so "
                                                   "the supervisor restarts the stage, which recreates the topics")

    # -- lifecycle ----------------------------------------------------------------------------
    def _start_processor(self) -> None:
        """``processor.start()`` in the worker thread, retried while a dependency is unavailable; before faust runs."""
        retry = _Retry(self, "start()")
        while True:
            try:
                self._executor.submit(self.processor.start).result()
            except Exception as exc:  # noqa: BLE001 - classified
                verdict = classify(exc, Kind.PERMANENT)
                if verdict.kind is not Kind.TRANSIENT:
                    self.exit(verdict.exit_code, f"cannot start: {verdict.cause}: {verdict.detail}")
                time.sleep(retry.next_delay(verdict))
            else:
                retry.done()
                return

    def run(self) -> None:
        """Blocks until SIGTERM/SIGINT; ends the process with an ``ExitCode`` on what it cannot get past."""
        stage = self.settings.stage
        configure_logging(self.name, stage.log_level, stage.log_format)
        server = serve_health(self.health, stage.health_port)
        log.info("health endpoints on port %d", server.server_port)
        self.health.set_ready(False, "loading")
        try:
            ensure_topics(self.settings.kafka, dict.fromkeys((*ALL_TOPICS, self.spec.source, *self.spec.writes)))
        except Exception as exc:  # noqa: BLE001 - classified
            verdict = classify(exc, Kind.TRANSIENT)
            self.exit(verdict.exit_code, f"cannot prepare the topics ({verdict.cause}): {verdict.detail}")
        threading.Thread(target=self._watch_topics, name=f"{self.name}-topics", daemon=True).start()
        self._start_processor()  # the consumer group is joined only after this

        worker = faust.Worker(self.app, loglevel=stage.log_level, override_logging=False, redirect_stdouts=False, quiet=True)
        try:
            worker.execute_from_commandline()
        finally:
            self._stopping.set()
            self.processor.stop()
            self._executor.shutdown(wait=True)
            server.shutdown()
