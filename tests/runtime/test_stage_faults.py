"""A stream stage under faults, as a real process over the real broker (a tiny processor, tests/runtime/tiny_stage.py):
a failed delivery commits nothing, a permanent error stops the stage with its cause named, an oversized poison
message is dead-lettered once and truncated with its hash, no partition is taken before start() returns, and a topic
that vanishes makes the stage exit for a restart."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import pytest

from runtime.errors import ExitCode
from runtime.kafka import EventProducer, EventReader, connection, ensure_topics, kafka_python_config
from schemas.events import DeadLetterEvent, utc_now
from schemas.topics import DEAD_LETTERS
from tests.kafka_helpers import send_raw
from tests.runtime.test_stream_stage import free_port, get, wait_for
from tests.runtime.tiny_stage import stage_spec, topics

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]


class Tiny:
    """One run of the tiny stage process."""

    def __init__(self, tiny_id: str, log: Path, **env: str):
        self.port = free_port()
        self.log = log
        environ = dict(os.environ, TINY_ID=tiny_id, VIGIL_STAGE__HEALTH_PORT=str(self.port), VIGIL_STAGE__LOG_FORMAT="text",
                       VIGIL_STAGE__TOPIC_CHECK_INTERVAL_S="1", **env)
        self._out = open(log, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "tests.runtime.tiny_stage"], env=environ, cwd=REPO,
                                        stdout=self._out, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        return get(self.port, "/readyz")[0] == 200

    def wait_exit(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the stage did not exit:\n{self.text()[-3000:]}") from None

    def text(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        code = self.wait_exit(60)
        self._out.close()
        return code


def event(camera: str, note: str) -> DeadLetterEvent:
    return DeadLetterEvent(camera_id=camera, source_ts=utc_now(), trace_id=note, stage="test", source_topic="test",
                           error=note, payload=b"in")


def read_all(settings, spec, match) -> list:
    with EventReader(settings.kafka, spec) as reader:
        return [r for r in reader.read_to_end() if match(r)]


@pytest.fixture
def tiny(stack, tmp_path):
    """(id, its source and output topics, a starter); every process started is stopped at the end."""
    tiny_id = uuid.uuid4().hex[:8]
    source, out = topics(tiny_id)
    ensure_topics(stack.settings.kafka, [source, out])
    started: list[Tiny] = []

    def start(**env: str) -> Tiny:
        run = Tiny(tiny_id, tmp_path / f"stage-{len(started)}.log", **env)
        started.append(run)
        return run

    yield tiny_id, source, out, start
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def test_failed_delivery_commits_nothing(stack, tiny):
    tiny_id, source, out, start = tiny
    producer = EventProducer(stack.settings.kafka)
    sent = event("cam-delivery", "one")
    producer.send(source, sent).get(timeout=30)
    producer.close()

    first = start(TINY_MODE="huge")  # its output is over the producer's request limit: the delivery fails
    code = first.wait_exit(60)
    assert code == ExitCode.PERMANENT, first.text()[-3000:]
    assert "cannot deliver 1 output(s)" in first.text() and "MessageSizeTooLargeError" in first.text()

    second = start(TINY_MODE="echo")  # the event was not acknowledged: it comes again
    echoed = wait_for(lambda: read_all(stack.settings, out, lambda r: r.event and r.event.error == f"echo of {sent.event_id}"),
                      45, "the event again after the restart")
    assert len(echoed) == 1
    assert second.stop() == 0, second.text()[-3000:]


def test_permanent_error_exits_with_its_cause_and_dead_letters_nothing(stack, tiny):
    tiny_id, source, out, start = tiny
    run = start(TINY_MODE="s3-denied")
    wait_for(run.ready, 60, "the stage to be ready")
    producer = EventProducer(stack.settings.kafka)
    producer.send(source, event("cam-denied", "denied")).get(timeout=30)
    producer.close()
    code = run.wait_exit(60)
    assert code == ExitCode.PERMANENT, run.text()[-3000:]
    assert "permanent error (s3:SignatureDoesNotMatch)" in run.text()
    assert not read_all(stack.settings, DEAD_LETTERS, lambda r: r.event and r.event.source_topic == source.name)


def test_oversized_poison_is_dead_lettered_once_truncated_with_its_hash(stack, tiny):
    tiny_id, source, out, start = tiny
    poison = b"\x00not json " + os.urandom(400 * 1024)
    send_raw(stack.settings.kafka, source.name, poison, key=b"../x\n")
    run = start(TINY_MODE="echo")
    letters = wait_for(lambda: read_all(stack.settings, DEAD_LETTERS, lambda r: r.event and r.event.source_topic == source.name),
                       60, "the dead letter")
    assert run.stop() == 0, run.text()[-3000:]
    assert len(letters) == 1
    letter = letters[0].event
    assert letter.camera_id == "invalid-camera-id"
    assert "'../x\\n'" in letter.error and letter.error.startswith("malformed DeadLetterEvent")
    assert letter.payload_truncated and letter.payload_size == len(poison)
    assert letter.payload == poison[:256 * 1024] and letter.payload_sha256 == hashlib.sha256(poison).hexdigest()
    assert len(letters[0].raw) < 1024 * 1024  # fits the broker's default message limit


def test_not_ready_and_no_partition_before_start_returns(stack, tiny, tmp_path):
    tiny_id, source, out, start = tiny
    mark = tmp_path / "started"
    producer = EventProducer(stack.settings.kafka)
    waiting = event("cam-start", "waiting")  # already there when the stage starts
    producer.send(source, waiting).get(timeout=30)
    producer.close()
    admin = KafkaAdminClient(**kafka_python_config(connection(stack.settings.kafka)))
    group = stage_spec(tiny_id).consumer_group

    def in_group() -> bool:  # this broker lists a group once it has members with offsets (describe_groups fails on it)
        return group in {g["group_id"] for g in admin.list_groups()}

    run = start(TINY_MODE="echo", TINY_START_S="8", TINY_MARK=str(mark))
    try:
        seen_probe = False
        while not mark.exists():
            ready, alive = get(run.port, "/readyz")[0], get(run.port, "/healthz")[0]
            seen_probe = seen_probe or ready == 503
            assert ready != 200 and alive != 200, "ready or alive before start() returned"
            assert not in_group(), "in the consumer group before start() returned"
            time.sleep(0.5)
        assert seen_probe, "the probes never answered while starting"
        wait_for(run.ready, 60, "the stage to be ready")
        assert get(run.port, "/healthz")[0] == 200
        wait_for(lambda: read_all(stack.settings, out, lambda r: r.event and r.event.error == f"echo of {waiting.event_id}"),
                 30, "the waiting event processed")
        assert float((tmp_path / "started.processed").read_text()) >= float(mark.read_text())
        wait_for(in_group, 30, "the group's offsets")
    finally:
        admin.close()
    assert run.stop() == 0, run.text()[-3000:]


def test_topic_watchdog_exits_when_a_topic_is_deleted(stack, tiny):
    tiny_id, source, out, start = tiny
    run = start(TINY_MODE="echo")
    wait_for(run.ready, 60, "the stage to be ready")
    admin = KafkaAdminClient(**kafka_python_config(connection(stack.settings.kafka)))
    try:
        admin.delete_topics([out.name])
    finally:
        admin.close()
    code = run.wait_exit(30)
    assert code == ExitCode.TOPIC_GONE, run.text()[-3000:]
    assert f"topic {out.name} is gone: the broker lost its data (restarted?)" in run.text()
