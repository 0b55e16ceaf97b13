"""The fault suite: real stage processes on the real local broker, S3 server and Milvus, each case under one fault.

    python -m bench.faults [--only NAME[,NAME]] [--quick] [--out RELIABILITY.md] [--list] [--verbose]

One local stack (``localstack.stack.running_stack`` in a temporary home) serves
the whole suite. Two people are enrolled from face-pairs photos; two cameras
(files made with ``synthetic.footage.make_footage``) each show one of them,
then a stranger, then the same person in another photo (two tracks, so two
alerts per camera). Every run is ``vigil.run.PipelineRun`` with a run id of
its own, ingest paced at real time (the faults land while a file is being
read), bound to a deployment of its own (``run_deployment``).

A fault-free **baseline** run comes first; every case is compared with it on
what the topics carry for the case's run id (read afterwards with
``EventReader``, as a downstream consumer would): distinct event ids on the
frames, faces and embeddings topics, and distinct alert ids per (camera,
person) on the alerts topic.

- **lost**: the shortfall against the baseline, summed over frames, faces,
  embeddings and alerts (alerts per (camera, person));
- **duplicate alerts**: distinct alert ids beyond the baseline's per (camera,
  person): the same sighting alerted twice under different ids;
- **copies**: alert messages beyond the distinct alert ids, i.e. the same
  ``alert_id`` delivered again (at-least-once redelivery; consumers
  deduplicate on it, so these are not duplicates).

A case **holds** when its run ends as expected (finished, or stopped with a
clear error where the fault is permanent), nothing is lost, no alert is
duplicated, and its own checks pass (e.g. each poison event dead-lettered
exactly once). A row that does not hold stays in the table with the reasons.
The last line printed is ``faults=N held=N lost=N duplicate_alerts=N``.

Cases that stop a server use its process group (the stack starts each server
in a session of its own, so the group holds its children too): SIGSTOP, then
SIGCONT. ``--quick`` runs the subset that ``tests/bench/test_faults.py`` runs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.common import environ, machine, markdown_table, text_table

FPS = 5
FRAMES_PER_SCENE = 12  # 2.4 s at 5 fps: longer than match.track_gap_s, so a stranger's scene splits a person's two tracks
SIZE = (640, 360)
GRACE_S = 35  # the stages' terminationGracePeriodSeconds (k8s/base)
CAMERAS = ("cam-a", "cam-b")
STREAM_LABELS = ("frames", "faces", "embeddings")
QUICK = ("kill-embed", "kill-match", "evidence-deleted", "poison")  # in the suite's order
CASE_TIMEOUT_S = 420


# --------------------------------------------------------------------------- footage and watchlist

@dataclass
class Footage:
    sources: list[str]  # "camera=path" for PipelineRun
    watchlist: dict[str, list[Path]]  # person -> photos enrolled for the suite
    spare: tuple[str, list[Path]]  # someone on no camera, enrolled during the Milvus outage
    frames: int


def make_suite_footage(folder: Path) -> Footage:
    """Per camera: an enrolled person (photos not enrolled), a stranger, the same person in another photo."""
    from synthetic.footage import Scene, identities, make_footage

    people = identities()
    rich = sorted(p for p, photos in people.items() if len(photos) >= 4)
    if len(rich) < 3:
        raise RuntimeError("face-pairs needs three people with four photos or more")
    persons, spare = rich[:2], rich[2]
    strangers = [people[p][0] for p in sorted(people) if p not in rich[:3]]
    sources, watchlist, frames = [], {}, 0
    for i, (camera, person) in enumerate(zip(CAMERAS, persons)):
        watchlist[person] = people[person][:2]
        scenes = [Scene(people[person][2], FRAMES_PER_SCENE, person), Scene(strangers[i], FRAMES_PER_SCENE, "stranger"),
                  Scene(people[person][3], FRAMES_PER_SCENE, person)]
        truth = make_footage(folder / f"{camera}.mp4", scenes, fps=FPS, size=SIZE, seed=i)
        frames += truth.n_frames
        sources.append(f"{camera}={truth.path}")
    return Footage(sources, watchlist, (spare, people[spare][:2]), frames)


# --------------------------------------------------------------------------- what a run put on the topics

@dataclass
class Tally:
    """One run's events as the topics hold them."""

    ids: dict[str, set[str]]  # frames/faces/embeddings -> distinct event ids
    messages: dict[str, int]  # frames/faces/embeddings -> messages (copies included)
    alerts: dict[tuple[str, str], set[str]]  # (camera, person) -> distinct alert ids
    alert_messages: int
    evidence_missing: dict[str, tuple[str, list[str]]]  # alert id -> (camera, what was missing)
    dead_letters: list  # every DeadLetterEvent written since the case began (they carry no run id)

    @property
    def alert_count(self) -> int:
        return sum(len(ids) for ids in self.alerts.values())

    def flow(self) -> str:
        return "/".join(str(len(self.ids[label])) for label in STREAM_LABELS) + f"/{self.alert_count}"


def read_tally(settings, run_id: str, since: datetime) -> Tally:
    from runtime.kafka import EventReader
    from schemas.events import AlertEvent
    from schemas.topics import ALERTS, DEAD_LETTERS, EMBEDDINGS, FACES, FRAMES

    def of_run(spec):
        with EventReader(settings.kafka, spec, since=since) as reader:
            return [r.event for r in reader.read_to_end() if r.event is not None and r.event.run_id == run_id]

    ids, messages = {}, {}
    for spec in (FRAMES, FACES, EMBEDDINGS):
        events = of_run(spec)
        ids[spec.label], messages[spec.label] = {e.event_id for e in events}, len(events)
    alerts: dict[tuple[str, str], set[str]] = defaultdict(set)
    missing = {}
    copies = 0
    for alert in of_run(ALERTS):
        if isinstance(alert, AlertEvent):
            copies += 1
            alerts[(alert.camera_id, alert.person_id)].add(alert.alert_id)
            if alert.evidence_missing:
                missing[alert.alert_id] = (alert.camera_id, list(alert.evidence_missing))
    with EventReader(settings.kafka, DEAD_LETTERS, since=since) as reader:
        letters = [r.event for r in reader.read_to_end() if r.event is not None]
    return Tally(ids, messages, dict(alerts), copies, missing, letters)


@dataclass
class Comparison:
    lost: dict[str, int]  # per label, alerts included
    duplicates: int
    copies: int

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())


def compare(baseline: Tally, got: Tally) -> Comparison:
    lost = {label: max(0, len(baseline.ids[label]) - len(got.ids[label])) for label in STREAM_LABELS}
    lost["alerts"] = sum(max(0, len(ids) - len(got.alerts.get(key, ()))) for key, ids in baseline.alerts.items())
    duplicates = sum(max(0, len(ids) - len(baseline.alerts.get(key, ()))) for key, ids in got.alerts.items())
    return Comparison(lost, duplicates, got.alert_messages - got.alert_count)


# --------------------------------------------------------------------------- cases

@dataclass
class Case:
    name: str
    expected: str
    inject: Callable[[CaseRun], None] | None = None  # runs in a thread once the stages are ready and ingest starts
    prepare: Callable[[CaseRun], None] | None = None  # before the run starts
    check: Callable[[CaseRun, Tally], None] | None = None  # after the run: ctx.fail(...) for what did not hold
    fails: str | None = None  # the stage a permanent fault must stop (the run ends with an error naming it)
    stage_env: dict[str, dict[str, str]] = field(default_factory=dict)
    max_restarts: int = 5
    compare: str = "all"  # all: frames to alerts; alerts: alerts only (the broker's log is gone); none


@dataclass
class Result:
    name: str
    expected: str
    observed: str
    flow: str  # frames/faces/embeddings/alerts of the run
    comparison: Comparison | None
    held: bool
    reasons: list[str]
    wall_s: float

    def row(self) -> list[str]:
        c = self.comparison
        lost = "-" if c is None else (str(c.lost_total) + (f" ({', '.join(f'{k} {v}' for k, v in c.lost.items() if v)})"
                                                          if c.lost_total else ""))
        dups = "-" if c is None else f"{c.duplicates} ({c.copies} copies)"
        held = "yes" if self.held else "**NO**: " + "; ".join(self.reasons)
        cells = [self.name, self.expected, self.observed, self.flow, lost, dups, held]
        return [" ".join(cell.split()).replace("|", "/") for cell in cells]  # one line each, no table separators


HEADER = ["fault", "expected", "observed", "events frames/faces/embeddings/alerts", "lost", "duplicate alerts (redelivered copies)",
          "held"]


class CaseRun:
    """One case's run in progress: the PipelineRun, what the injector did and what did not hold."""

    def __init__(self, suite: Suite, case: Case, run):
        self.suite, self.case, self.run = suite, case, run
        self.settings = suite.settings
        self.started = datetime.now(timezone.utc) - timedelta(seconds=5)  # the topics' timestamps are the broker's
        self.done = threading.Event()
        self.notes: list[str] = []
        self.problems: list[str] = []
        self.error: BaseException | None = None
        self.summary = None
        self.state: dict = {}  # what an injector hands to its check

    def note(self, text: str) -> None:
        self.notes.append(text)

    def fail(self, reason: str) -> None:
        self.problems.append(reason)

    def wait(self, predicate: Callable[[], bool], what: str, timeout_s: float = 300) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.done.is_set() and time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.2)
        self.fail(f"the fault was not injected: {what} did not happen")
        return False

    def process(self, name: str):
        return self.run.stages[name].process

    def handled(self, name: str) -> float:
        """Input events the current process of stage ``name`` has finished with (0 while it cannot be scraped)."""
        from runtime import metrics
        from schemas.stages import BY_NAME as STAGES

        stage = self.run.stages.get(name)
        try:
            return stage.scrape().get(metrics.EVENTS_IN, topic=STAGES[stage.stage].source.name) if stage else 0.0
        except OSError:
            return 0.0

    def published(self) -> float:
        from runtime import metrics
        from schemas.topics import FRAMES

        stage = self.run.stages.get("ingest")
        try:
            return stage.scrape().get(metrics.EVENTS_OUT, topic=FRAMES.name) if stage else 0.0
        except OSError:
            return 0.0

    def inputs(self, stage: str) -> int:
        """The baseline's input events of ``stage``."""
        return len(self.suite.baseline.ids[{"detect": "frames", "embed": "faces", "match": "embeddings"}[stage]])


def _signal_stage(ctx: CaseRun, stage: str, sig: signal.Signals) -> None:
    threshold = max(1, ctx.inputs(stage) // 3)
    if not ctx.wait(lambda: ctx.handled(stage) >= threshold, f"{stage} handling {threshold} events"):
        return
    process = ctx.process(stage)
    handled = ctx.handled(stage)
    sent = time.monotonic()
    os.kill(process.pid, sig)
    ctx.note(f"{sig.name} to {stage} after {handled:.0f} of its {ctx.inputs(stage)} events")
    if sig == signal.SIGTERM:
        while process.poll() is None and time.monotonic() - sent < GRACE_S + 30:
            time.sleep(0.1)
        took = time.monotonic() - sent
        code = process.poll()
        ctx.note(f"{stage} exited with {code} in {took:.1f} s")
        if code is None or took > GRACE_S:
            ctx.fail(f"{stage} did not stop within the {GRACE_S} s grace period")
        elif code != 0:
            ctx.fail(f"{stage} exited with {code} after SIGTERM, not 0")


def kill_mid_batch(stage: str) -> Case:
    return Case(f"kill-{stage}", f"SIGKILL {stage} mid-batch: restarted, the run finishes with the baseline's alerts",
                inject=lambda ctx: _signal_stage(ctx, stage, signal.SIGKILL), check=restarted(stage))


def term_mid_batch(stage: str) -> Case:
    return Case(f"sigterm-{stage}", f"SIGTERM {stage} mid-batch: finishes its batch, exits 0 within {GRACE_S} s, restarted, "
                "nothing lost", inject=lambda ctx: _signal_stage(ctx, stage, signal.SIGTERM), check=restarted(stage))


def restarted(stage: str) -> Callable[[CaseRun, Tally], None]:
    def check(ctx: CaseRun, tally: Tally) -> None:
        if ctx.notes and not ctx.run.restarts.get(stage):
            ctx.fail(f"{stage} was not restarted")
    return check


def _kill_match_after_alert(ctx: CaseRun) -> None:
    from runtime.kafka import EventReader
    from schemas.topics import ALERTS

    with EventReader(ctx.settings.kafka, ALERTS, since=ctx.started) as reader:
        while not ctx.done.is_set():
            alert = next((r.event for r in reader.read(timeout_s=0.2) if r.event is not None and r.event.run_id == ctx.run.run_id), None)
            if alert is not None:
                os.kill(ctx.process("match").pid, signal.SIGKILL)
                ctx.note(f"SIGKILL to match as soon as alert {alert.alert_id[:8]} was on the topic (before match's next commit)")
                return
    ctx.fail("the fault was not injected: no alert came")


def _second_match(ctx: CaseRun) -> None:
    if not ctx.wait(lambda: ctx.handled("match") >= 2, "match handling 2 embeddings"):
        return
    # The footage is held (ingest stopped) while the group rebalances, so the tracks are still open when they move.
    ingest = ctx.run.stages["ingest"].process
    ingest.send_signal(signal.SIGSTOP)
    try:
        instance = ctx.run.add_instance("match")
        ctx.note(f"ingest held after match handled {ctx.handled('match'):.0f} embeddings; second instance {instance.name} started")
        if ctx.wait(lambda: ctx.run.stages[instance.name].ready(), f"{instance.name} ready", timeout_s=120):
            # Then the first instance is lost for good (SIGKILL, not restarted: a node gone), so every partition, and
            # the tracks open on them, moves to the second.
            ctx.run.retire("match", signal.SIGKILL)
            ctx.note(f"once {instance.name} was ready, the first instance SIGKILLed for good; ingest resumed")
    finally:
        ingest.send_signal(signal.SIGCONT)
    handled = 0.0
    while not ctx.done.wait(0.5):
        handled = max(handled, ctx.handled(instance.name))
    ctx.note(f"{instance.name} handled {handled:.0f}")
    if handled == 0:
        ctx.fail(f"{instance.name} handled no embedding: no track moved to it")


def pause(service: str, seconds: float, during: str = "ingest") -> Callable[[CaseRun], None]:
    """SIGSTOP the server's process group for ``seconds`` once ``during`` is busy (ingest: mid-file), then SIGCONT."""
    def inject(ctx: CaseRun) -> None:
        ready = (lambda: ctx.published() >= 6) if during == "ingest" else (lambda: ctx.handled(during) >= 2)
        if not ctx.wait(ready, f"{during} under way"):
            return
        with ctx.suite.stopped(service):
            ctx.note(f"{service} stopped for {seconds:.0f} s once {during} was under way")
            if service == "milvus":
                _enrol_during(ctx, seconds)
            else:
                time.sleep(seconds)
    return inject


def _enrol_during(ctx: CaseRun, seconds: float) -> None:
    """An enrolment while Milvus is stopped: it must wait and succeed, or fail clearly with nothing half-done."""
    suite = ctx.suite
    person, photos = suite.footage.spare
    outcome: dict = {}

    def enrol():
        try:
            outcome["result"] = suite.enrol(person, photos)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the case reports
            outcome["error"] = exc

    worker = threading.Thread(target=enrol, name="enrol-during-outage", daemon=True)
    worker.start()
    time.sleep(seconds)
    ctx.state["enrolment"] = (worker, outcome, person)


def _check_enrolment(ctx: CaseRun, tally: Tally) -> None:
    from storage.objects import ObjectStore
    from storage.vectors import Watchlist

    if "enrolment" not in ctx.state:
        return
    worker, outcome, person = ctx.state["enrolment"]
    worker.join(180)
    if worker.is_alive():
        ctx.fail("the enrolment during the outage was still blocked 3 min after Milvus came back")
        return
    store = ObjectStore(ctx.settings.s3)
    with Watchlist(ctx.settings.milvus) as watchlist:
        entries = watchlist.entries(person_id=person)
        photos = store.list_keys(ctx.settings.s3.watchlist_bucket, f"{person}/")
        if "result" in outcome:
            ctx.note(f"the enrolment during it waited and enrolled {len(entries)} photo(s)")
            if not entries or len(photos) != len(entries):
                ctx.fail(f"the enrolment reported success but left {len(entries)} entries and {len(photos)} photos")
        else:
            error = outcome["error"]
            ctx.note(f"the enrolment during it failed: {type(error).__name__}: {str(error)[:120]}")
            if entries or photos:
                ctx.fail(f"the failed enrolment left {len(entries)} entries and {len(photos)} photos behind")
            if not str(error).strip():
                ctx.fail("the failed enrolment gave no reason")
        watchlist.delete(entries)  # the suite's watchlist as it was
    store.delete(ctx.settings.s3.watchlist_bucket, photos)


def _restart_broker(ctx: CaseRun) -> None:
    from localstack.stack import restart_service

    if not ctx.wait(lambda: ctx.published() >= 6, "ingest under way"):
        return
    os.killpg(ctx.suite.service_pgid("kafka"), signal.SIGKILL)
    restart_service(ctx.suite.home, "kafka")
    ctx.note("broker killed (SIGKILL) mid-file and restarted on the same port (its log, in memory, is gone)")


def _delete_evidence(ctx: CaseRun) -> None:
    from storage.objects import ObjectStore

    store, bucket = ObjectStore(ctx.settings.s3), ctx.settings.s3.evidence_bucket
    deleted: set[str] = set()
    while not ctx.done.is_set():
        fresh = [k for k in store.list_keys(bucket, f"transient/{CAMERAS[0]}/") if k not in deleted]
        if fresh:
            store.delete(bucket, fresh)
            deleted.update(fresh)
        time.sleep(0.1)
    ctx.note(f"deleted {CAMERAS[0]}'s {len(deleted)} transient evidence objects as detect wrote them")


def _check_evidence(ctx: CaseRun, tally: Tally) -> None:
    for (camera, _), ids in tally.alerts.items():
        for alert_id in ids:
            missing = tally.evidence_missing.get(alert_id, (camera, []))[1]
            if camera == CAMERAS[0] and not missing:
                ctx.fail(f"alert {alert_id[:8]} on {camera} does not say its evidence is missing")
            if camera != CAMERAS[0] and missing:
                ctx.fail(f"alert {alert_id[:8]} on {camera} says {missing} missing, but nothing was deleted there")
    marked = sum(1 for camera, _ in tally.evidence_missing.values() if camera == CAMERAS[0])
    ctx.note(f"{marked} alert(s) on {CAMERAS[0]} raised with evidence_missing")


def _kill_ingest(ctx: CaseRun) -> None:
    third = max(1, ctx.suite.footage.frames // 3)
    if ctx.wait(lambda: ctx.published() >= third, f"ingest publishing {third} frames"):
        os.kill(ctx.process("ingest").pid, signal.SIGKILL)
        ctx.note(f"SIGKILL to ingest after {third} frames; the supervisor runs it again with the same run id and start")


def _check_ingest(ctx: CaseRun, tally: Tally) -> None:
    if ctx.notes and not ctx.run.restarts.get("ingest"):
        ctx.fail("ingest was not run again")
    ctx.note(f"{tally.messages['frames']} frame messages for {len(tally.ids['frames'])} frame ids")


# --- poison events


def _jpeg(image, quality: int = 75) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _bomb_jpeg(width: int = 30000, height: int = 30000) -> bytes:
    """A few hundred bytes whose header declares ``width`` x ``height`` pixels (gigabytes once decoded)."""
    import numpy as np

    data = bytearray(_jpeg(np.zeros((16, 16, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def poison_variants(topic: str, raw: bytes) -> list[tuple[str, bytes, bytes, bool]]:
    """(kind, key, value, dead-letter expected) made from one real event of the run on ``topic``."""
    import numpy as np

    doc = json.loads(raw)
    key = doc["camera_id"].encode()
    label = topic.split(".")[1]

    def variant(suffix: str, **changes) -> bytes:
        return json.dumps({**doc, "event_id": f"{doc['event_id']}-{suffix}", **changes}).encode()

    out = [
        ("bad JSON", key, raw[: len(raw) // 2], True),
        ("wrong schema version", key, variant("v2", schema_version=2), True),
        # Unknown fields are a newer writer's (docs/consumers.md): the same event again, accepted, not dead-lettered.
        ("unknown field", key, json.dumps({**doc, "x_added_later": True}).encode(), False),
        ("camera id with '..'", f"../{doc['camera_id']}".encode(), variant("dotdot", camera_id=f"../{doc['camera_id']}"), True),
    ]
    if label == "frames":
        oversized = _jpeg(np.full((4200, 4200, 3), 128, np.uint8))  # 17.6 MP: over detect.max_frame_pixels (16.8 MP)
        out.append(("oversized frame (4200x4200)", key, variant("big", image_jpeg=base64.b64encode(oversized).decode(),
                                                                width=4200, height=4200), True))
        out.append(("decompression-bomb JPEG (30000x30000 in a few hundred bytes)", key,
                    variant("bomb", image_jpeg=base64.b64encode(_bomb_jpeg()).decode()), True))
    if label == "embeddings":
        vector = [float("nan")] + doc["embedding"][1:]
        out.append(("NaN embedding", key, variant("nan", face_event_id=f"{doc['face_event_id']}-nan", embedding=vector), True))
    return out


def _poison(ctx: CaseRun) -> None:
    from kafka import KafkaProducer

    from runtime.kafka import EventReader, connection, kafka_python_config
    from schemas.topics import EMBEDDINGS, FACES, FRAMES

    producer = KafkaProducer(**kafka_python_config(connection(ctx.settings.kafka)), max_request_size=8 * 1024 * 1024)
    sent = ctx.state.setdefault("poison", [])
    try:
        for spec in (FRAMES, FACES, EMBEDDINGS):
            with EventReader(ctx.settings.kafka, spec, since=ctx.started) as reader:
                first = None
                while first is None and not ctx.done.is_set():
                    first = next((r for r in reader.read(timeout_s=0.2) if r.event is not None and r.event.run_id == ctx.run.run_id), None)
            if first is None:
                ctx.fail(f"no event of the run on {spec.name} to make poison from")
                return
            for kind, key, value, letter in poison_variants(spec.name, first.raw):
                meta = producer.send(spec.name, key=key, value=value).get(timeout=30)
                sent.append((spec.label, kind, meta.topic, meta.partition, meta.offset, letter))
        ctx.note(f"{len(sent)} poison events sent: {sum(1 for s in sent if s[5])} to dead-letter, "
                 f"{sum(1 for s in sent if not s[5])} with an unknown field (to accept)")
    finally:
        producer.close()


def _check_poison(ctx: CaseRun, tally: Tally) -> None:
    letters = Counter((d.source_topic, d.source_partition, d.source_offset) for d in tally.dead_letters)
    reasons = {(d.source_topic, d.source_partition, d.source_offset): d.error for d in tally.dead_letters}
    for label, kind, topic, partition, offset, expected in ctx.state.get("poison", []):
        n = letters[(topic, partition, offset)]
        if expected and n != 1:
            ctx.fail(f"{kind} on {label}: dead-lettered {n} times")
        elif not expected and n:
            ctx.fail(f"{kind} on {label}: dead-lettered ({reasons[(topic, partition, offset)][:80]})")
        elif expected:
            ctx.note(f"{label} {kind}: {short_reason(reasons[(topic, partition, offset)])}")


def short_reason(error: str) -> str:
    """A dead letter's reason in a few words: where validation failed, or the refusal without event ids."""
    where = re.search(r"first at (\S+?):", error)
    if where:
        return f"malformed ({where.group(1)})"
    return re.sub(r"\b[0-9a-f]{16,}\S*", "...", error.split("refused the event: ")[-1])[:90]


# --- permanent faults: the stage must stop, clearly, acknowledging nothing


def _pending_frames(ctx: CaseRun) -> None:
    """Frames of this run already waiting for detect (ingest starts only once every stage is ready)."""
    from runtime.kafka import EventProducer
    from schemas.topics import FRAMES

    producer = EventProducer(ctx.settings.kafka, client_id="vigil-faults")
    try:
        sent = []
        for frame in ctx.suite.sample_frames:
            event = frame.model_copy(update={"run_id": ctx.run.run_id, "event_id": f"{frame.event_id}-pending"})
            sent.append(producer.send(FRAMES, event).get(timeout=30))
        ctx.state["pending"] = [(m.topic, m.partition, m.offset) for m in sent]
        ctx.note(f"{len(sent)} frames of the run waiting for detect")
    finally:
        producer.close()


def committed(settings, group: str, topic: str) -> dict[int, int]:
    """``group``'s committed offset per partition of ``topic`` (-1: none)."""
    from kafka import KafkaAdminClient, TopicPartition

    from runtime.kafka import connection, kafka_python_config

    admin = KafkaAdminClient(**kafka_python_config(connection(settings.kafka)))
    try:
        consumer_offsets = admin.list_group_offsets({group: None}).get(group, {})  # None: every committed offset
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in consumer_offsets.items() if isinstance(tp, TopicPartition) and tp.topic == topic}


def stopped_clearly(stage: str, cause: str) -> Callable[[CaseRun, Tally], None]:
    """The run stopped on ``stage``, whose log names ``cause`` (a regular expression), and nothing was acknowledged."""
    def check(ctx: CaseRun, tally: Tally) -> None:
        error = str(ctx.error or "")
        if ctx.error is None:
            ctx.fail(f"the run finished: {stage} carried on under a permanent fault")
        elif not re.search(rf"\b{stage}\b", error.splitlines()[0] if error else ""):
            ctx.fail(f"the run stopped without naming {stage}: {error.splitlines()[0][:120] if error else type(ctx.error).__name__}")
        log = ctx.run.stages[stage].log_path.read_text(errors="replace") if stage in ctx.run.stages else ""
        if not re.search(cause, log, re.IGNORECASE):
            ctx.fail(f"{stage}'s log does not name the cause ({cause})")
        else:
            ctx.note(f"{stage}: {re.search(cause, log, re.IGNORECASE).group(0)} in its log")
        for topic, partition, offset in ctx.state.get("pending", []):
            if committed(ctx.settings, f"vigil-{stage}", topic).get(partition, -1) > offset:
                ctx.fail(f"{stage} acknowledged a pending event ({topic}[{partition}]@{offset})")
        own = [d for d in tally.dead_letters if d.stage == stage]
        if own:
            ctx.fail(f"{stage} dead-lettered {len(own)} event(s) instead of stopping: {own[0].error[:80]}")
    return check


def _collection_case_prepare(ctx: CaseRun) -> None:
    """A watchlist collection of the case's own, enrolled like the suite's, so dropping it leaves the suite's intact."""
    collection = ctx.case.stage_env["match"]["VIGIL_MILVUS__COLLECTION"]
    ctx.suite.enrol_all(ctx.suite.settings_with(collection=collection))


def _drop_collection(ctx: CaseRun) -> None:
    from storage.vectors import Watchlist

    settings = ctx.suite.settings_with(collection=ctx.case.stage_env["match"]["VIGIL_MILVUS__COLLECTION"])
    if ctx.wait(lambda: ctx.handled("match") >= 2, "match handling 2 embeddings"):
        with Watchlist(settings.milvus) as watchlist:
            watchlist.drop()
        ctx.note(f"watchlist collection {settings.milvus.collection} dropped after match handled {ctx.handled('match'):.0f}")


def all_cases() -> list[Case]:
    unique = uuid.uuid4().hex[:8]
    return [
        kill_mid_batch("detect"),
        kill_mid_batch("embed"),
        kill_mid_batch("match"),
        Case("kill-match-after-alert", "SIGKILL match after it sent an alert, before it committed: the redelivered faces give the "
             "same alert_id (a copy), never a new one", inject=_kill_match_after_alert, check=restarted("match")),
        Case("second-match", "a second match instance joins mid-track (a rebalance), then the first is lost for good "
             "(SIGKILL, not restarted), so the open tracks move to the second: the same alert ids, whichever instance carries each track on", inject=_second_match),
        term_mid_batch("detect"),
        term_mid_batch("embed"),
        term_mid_batch("match"),
        Case("ingest-killed", "SIGKILL ingest mid-file; run again with the same run id: the same frame ids, nothing "
             "duplicated downstream", inject=_kill_ingest, check=_check_ingest),
        Case("evidence-deleted", f"{CAMERAS[0]}'s transient evidence deleted before match copies it: its alerts still raised, "
             "marked evidence_missing", inject=_delete_evidence, check=_check_evidence),
        Case("poison", "on frames, faces and embeddings: bad JSON, wrong schema version, camera id with '..', NaN embedding, "
             "oversized frame, decompression bomb each dead-lettered once with its reason; an unknown field accepted; "
             "the rest unaffected", inject=_poison, check=_check_poison),
        Case("s3-paused-60s", "S3 stopped (SIGSTOP) 60 s: stages not ready meanwhile, retry, nothing lost",
             inject=pause("s3", 60, during="detect")),
        Case("milvus-paused-60s", "Milvus stopped 60 s: match waits, nothing lost; an enrolment meanwhile waits and succeeds "
             "or fails clearly with nothing half-done", inject=pause("milvus", 60, during="match"), check=_check_enrolment),
        Case("broker-paused-30s", "the broker stopped 30 s mid-file: ingest waits (nothing lost from files), stages carry on",
             inject=pause("kafka", 30)),
        Case("broker-paused-3min", "the broker stopped 3 min mid-file: as for 30 s", inject=pause("kafka", 180)),
        Case("wrong-s3-secret", "detect started with a wrong S3 secret: never ready, exits naming the cause, the run stops "
             "naming detect; the frames waiting for it are not acknowledged", prepare=_pending_frames,
             check=stopped_clearly("detect", r"SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId|secret|credential"),
             fails="detect", stage_env={"detect": {"VIGIL_S3__SECRET_KEY": "not-the-secret"}}, max_restarts=1, compare="none"),
        Case("milvus-collection-dropped", "the watchlist collection dropped mid-run: match not ready, exits naming the "
             "collection, the run stops naming match; nothing acknowledged without a search",
             prepare=_collection_case_prepare, inject=_drop_collection, fails="match",
             check=stopped_clearly("match", rf"faults_drop_{unique}|collection"),
             stage_env={"match": {"VIGIL_MILVUS__COLLECTION": f"faults_drop_{unique}"}},
             max_restarts=1, compare="none"),
        Case("broker-restart", "the broker killed and restarted mid-file: the stages recover without a person (topics "
             "recreated, or exit and restart); the alerts of the baseline reach a consumer (the local broker keeps its log in "
             "memory, so only alerts are compared)", inject=_restart_broker, compare="alerts"),
    ]


# --------------------------------------------------------------------------- the suite

class Suite:
    def __init__(self, settings, home: Path, footage: Footage, *, out, log):
        from accountability.actors import Actor

        self.settings, self.home, self.footage, self.out, self.log = settings, home, footage, out, log
        self.actor = Actor("faults", "cli", frozenset({"enroller", "authoriser"}))
        self.baseline: Tally | None = None
        self.sample_frames: list = []  # a few of the baseline's frames (permanent-fault cases re-send them)
        self._models = None
        self._stopped: set[str] = set()

    # -- the services
    def service_pgid(self, name: str) -> int:
        from localstack.stack import pids

        found = pids(self.home).get(name)
        if not found:
            raise RuntimeError(f"the stack in {self.home} has no {name} process")
        return found[0]  # the launcher leads a session (and so a process group) of its own: its children are in it

    @contextlib.contextmanager
    def stopped(self, name: str) -> Iterator[None]:
        pgid = self.service_pgid(name)
        os.killpg(pgid, signal.SIGSTOP)
        self._stopped.add(name)
        try:
            yield
        finally:
            os.killpg(pgid, signal.SIGCONT)
            self._stopped.discard(name)

    def resume_services(self) -> None:
        """SIGCONT whatever a case left stopped (an interrupted suite must not leave the stack frozen)."""
        for name in list(self._stopped):
            with contextlib.suppress(OSError, RuntimeError):
                os.killpg(self.service_pgid(name), signal.SIGCONT)

    # -- the watchlist
    def settings_with(self, *, collection: str):
        return self.settings.model_copy(update={"milvus": self.settings.milvus.model_copy(update={"collection": collection})})

    def enrol(self, person: str, photos: list[Path], settings=None) -> list[int]:
        from vigil.enroll import Enroller

        if self._models is None:
            from detect.model import FaceDetector
            from embed.model import FaceEmbedder
            from runtime.device import device_from_settings

            device = device_from_settings(self.settings.models)
            self._models = (FaceDetector(self.settings.detect, device), FaceEmbedder(self.settings.models.weights_dir, device))
        enroller = Enroller(settings or self.settings, detector=self._models[0], embedder=self._models[1])
        try:
            result = enroller.enroll(person, photos, actor=self.actor, reason="fault suite",
                                     expires_at=datetime.now(timezone.utc) + timedelta(days=1))
        finally:
            enroller.close()
        if not result.enrolled:
            raise RuntimeError(f"could not enrol {person}: {result.refused}")
        return result.entry_ids

    def enrol_all(self, settings=None) -> None:
        for person, photos in self.footage.watchlist.items():
            self.enrol(person, photos, settings)

    # -- runs
    def run_case(self, case: Case) -> tuple[Result, Tally]:
        from accountability.audit import AuditLog
        from vigil.run import PipelineRun, run_deployment

        run_id = f"faults-{case.name}-{uuid.uuid4().hex[:6]}"
        runner_log = self.home / "logs" / f"{run_id}-runner.log"
        runner_log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(runner_log, "w") as out:
            run = PipelineRun(self.settings, self.footage.sources, home=self.home, out=self.out or out,
                              stage_env=case.stage_env, run_id=run_id, max_restarts=case.max_restarts)
            ctx = CaseRun(self, case, run)
            if case.prepare:
                case.prepare(ctx)
            injector = threading.Thread(target=self._inject, args=(ctx,), name=f"inject-{case.name}", daemon=True)
            settings = self.settings
            if "match" in case.stage_env and "VIGIL_MILVUS__COLLECTION" in case.stage_env["match"]:
                settings = self.settings_with(collection=case.stage_env["match"]["VIGIL_MILVUS__COLLECTION"])
            try:
                with AuditLog(settings) as audit, run_deployment(settings, self.actor, run, case="faults", reason=f"fault suite: {case.name}",
                                                                 persons=sorted(self.footage.watchlist), audit=audit):
                    injector.start()
                    try:
                        # Model loading takes 20-40 s per stage on 2 idle cores, minutes when the machine is shared.
                        ctx.summary = run.execute(ready_timeout_s=600, drain_timeout_s=CASE_TIMEOUT_S)
                    except (RuntimeError, TimeoutError) as exc:
                        ctx.error = exc
            except Exception as exc:  # noqa: BLE001 - a case that breaks its run's set-up or tear-down did not hold
                ctx.fail(f"the run's deployment could not be started or ended: {' '.join(str(exc).split())[:200]}")
            finally:
                ctx.done.set()
                if injector.is_alive():
                    injector.join(240)
        tally = read_tally(self.settings, run_id, ctx.started)
        return self._judge(ctx, tally, time.monotonic() - t0), tally

    def _inject(self, ctx: CaseRun) -> None:
        if ctx.case.inject is None:
            return
        while not ctx.run.ready.wait(0.5):
            if ctx.done.is_set():
                ctx.fail("the fault was not injected: the stages never got ready")
                return
        try:
            ctx.case.inject(ctx)
        except Exception as exc:  # noqa: BLE001 - a broken injector is a row that did not hold, not a dead suite
            ctx.fail(f"the injector failed: {type(exc).__name__}: {exc}")

    def _judge(self, ctx: CaseRun, tally: Tally, wall_s: float) -> Result:
        case = ctx.case
        comparison = None
        if case.compare != "none" and self.baseline is not None:
            comparison = compare(self.baseline, tally)
            if case.compare == "alerts":
                comparison = replace(comparison, lost={"alerts": comparison.lost["alerts"]})
        if case.fails is None and ctx.error is not None:
            ctx.fail(f"the run failed: {str(ctx.error).splitlines()[0][:200]}")
        if case.check:
            try:
                case.check(ctx, tally)
            except Exception as exc:  # noqa: BLE001 - a check that cannot run (a server gone) is a row that did not hold
                ctx.fail(f"its check could not run: {' '.join(str(exc).split())[:200]}")
        if comparison and comparison.lost_total:
            ctx.fail(f"{comparison.lost_total} event(s) lost against the baseline")
        if comparison and comparison.duplicates:
            ctx.fail(f"{comparison.duplicates} duplicate alert(s)")
        restarts = {k: v for k, v in ctx.run.restarts.items() if v}
        observed = "; ".join(ctx.notes + ([f"restarts {dict(restarts)}"] if restarts else [])
                             + ([f"run stopped: {str(ctx.error).splitlines()[0][:160]}"] if ctx.error and case.fails else []))
        return Result(case.name, case.expected, observed or "-", tally.flow(), comparison, not ctx.problems, ctx.problems, wall_s)

    def run_baseline(self) -> Tally:
        from schemas.topics import FRAMES
        from runtime.kafka import EventReader

        result, tally = self.run_case(Case("baseline", "no fault"))
        if not result.held or tally.alert_count < len(self.footage.watchlist):
            raise RuntimeError(f"the baseline run is not usable ({tally.flow()} frames/faces/embeddings/alerts): {result.reasons}")
        self.baseline = tally
        with EventReader(self.settings.kafka, FRAMES) as reader:
            frames = [r.event for r in reader.read_to_end() if r.event is not None and r.event.event_id in tally.ids["frames"]]
        self.sample_frames = frames[:3]
        return tally


def select(only: list[str] | None, quick: bool) -> list[Case]:
    cases = all_cases()
    names = [c.name for c in cases]
    wanted = list(only or (QUICK if quick else names))
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; the cases are: {', '.join(names)}")
    return [c for c in cases if c.name in wanted]


def run_suite(cases: list[Case], root: Path, *, out=None, log=print) -> tuple[list[Result], Tally]:
    """The stack, the footage, the watchlist and the baseline in ``root``, then each case; returns the results and the baseline."""
    from localstack.stack import running_stack
    from runtime.settings import load_settings

    home = root / "home"
    t0 = time.monotonic()
    footage = make_suite_footage(root)
    with running_stack(home) as info, environ({
        "VIGIL_CONFIG": info["config"],
        "VIGIL_INGEST__TARGET_FPS": str(FPS),
        "VIGIL_INGEST__REALTIME": "true",  # each file takes its real length, so the faults land mid-file
        "VIGIL_MILVUS__COLLECTION": f"faults_{uuid.uuid4().hex[:8]}",
    }):
        suite = Suite(load_settings(), home, footage, out=out, log=log)
        try:
            suite.enrol_all()
            log(f"stack up, {footage.frames} frames of footage, {len(footage.watchlist)} people enrolled "
                f"in {time.monotonic() - t0:.0f} s")
            baseline = suite.run_baseline()
            log(f"baseline: frames/faces/embeddings/alerts {baseline.flow()}, alerts per (camera, person) "
                f"{ {f'{c}/{p}': len(ids) for (c, p), ids in sorted(baseline.alerts.items())} }")
            results = []
            for case in cases:
                result, _ = suite.run_case(case)
                results.append(result)
                row = result.row()
                log(f"{result.name}: {'held' if result.held else 'DID NOT HOLD'} in {result.wall_s:.0f} s; events {row[3]}; "
                    f"lost {row[4]}; duplicate alerts {row[5]}; {result.observed}" + ("" if result.held else f"; {row[6]}"))
        finally:
            suite.resume_services()
    return results, baseline


def last_line(results: list[Result]) -> str:
    compared = [r.comparison for r in results if r.comparison is not None]
    return (f"faults={len(results)} held={sum(r.held for r in results)} lost={sum(c.lost_total for c in compared)} "
            f"duplicate_alerts={sum(c.duplicates for c in compared)}")


def memory_gib() -> float:
    with open("/proc/meminfo") as fh:
        return int(next(line for line in fh if line.startswith("MemTotal:")).split()[1]) / 1024 ** 2


RUN_TEXT = """\
# Reliability: the fault suite

Each row is one fault injected into a real run of the whole pipeline (every
stage its own process, supervised by `vigil run`) on the real local broker
(Tansu), S3 server (SeaweedFS) and Milvus, compared with a fault-free run of
the same footage: two cameras, each showing an enrolled person, a stranger,
then the person again (two tracks, two alerts per camera). See the docstring
of `bench/faults.py` for how events are counted.

- **lost**: frames, faces, embeddings and alerts (per camera and person) the
  fault-free run had and the faulted one lacks;
- **duplicate alerts**: distinct alert ids beyond the fault-free run's per
  camera and person; **copies** are the same `alert_id` delivered again
  (at-least-once, deduplicated by consumers), not duplicates;
- **held**: the run ended as expected, nothing lost, no duplicate, and the
  case's own checks passed. A row that did not hold says why.

Run it (about 30 minutes on 2 cores; `--quick` about 6, the subset
`tests/bench/test_faults.py` runs):

    python -m bench.faults --out RELIABILITY.md
    python -m bench.faults --only kill-match,poison
    python -m bench.faults --list
"""


def report(results: list[Result], baseline: Tally, info: dict) -> str:
    lines = [RUN_TEXT, "## Latest run", "",
             f"{info['date']}, commit {info['commit']}; {info['cpu']}, {info['cores']} cores, "
             f"{memory_gib():.0f} GiB RAM, GPU: {info['gpu']}; load average at the end {info['load_avg']}.", "",
             f"Baseline (no fault): frames/faces/embeddings/alerts {baseline.flow()}.", "",
             markdown_table(HEADER, [r.row() for r in results]), "", last_line(results), ""]
    failing = [r for r in results if not r.held]
    lines += ["## Rows that did not hold", ""]
    lines += [f"- **{r.name}**: {'; '.join(r.reasons)}." for r in failing] or ["None."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--quick", action="store_true", help=f"the quick subset: {', '.join(QUICK)}")
    parser.add_argument("--out", type=Path, help="write the report (Markdown) there, e.g. RELIABILITY.md")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--verbose", action="store_true", help="show the runner's progress lines")
    parser.add_argument("--workdir", type=Path, help="keep the stack, footage and logs there (default: a temporary folder)")
    args = parser.parse_args(argv)
    cases = select([n.strip() for n in args.only.split(",") if n.strip()] or None, args.quick)
    if args.list:
        for case in all_cases():
            print(f"{case.name:28} {case.expected}")
        return 0
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    with contextlib.ExitStack() as stack:
        root = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vigil-faults-")))
        root.mkdir(parents=True, exist_ok=True)
        results, baseline = run_suite(cases, root, out=sys.stderr if args.verbose else None, log=log)
    info = machine()
    numbers = [0, 3, 4, 5, 6]  # the table's short columns; expected and observed follow it, row by row
    print(text_table([HEADER[i] for i in numbers], [[r.row()[i] for i in numbers] for r in results]))
    for r in results:
        print(f"\n{r.name}\n  expected: {r.expected}\n  observed: {r.observed}")
    if args.out:
        args.out.write_text(report(results, baseline, info))
    print(last_line(results))
    return 0 if all(r.held for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
