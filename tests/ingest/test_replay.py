"""Replay: a topic re-read from a point in time; recorded footage back through running stages under a replay run id."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import av
import pytest

from ingest.archive import FootageArchive
from ingest.service import IngestService
from runtime.kafka import EventProducer, ensure_topics
from runtime.settings import CameraSettings, VigilSettings
from schemas.events import FrameEvent
from schemas.topics import FRAMES
from storage.objects import ObjectStore
from tests.ingest.conftest import free_port, published, tansu_available, tansu_broker, wait_for, with_ingest
from vigil.cli import main
from synthetic.footage import Scene, make_footage
from vigil.replay import replay_topic, run_alerts
from schemas.stages import STREAM_STAGES
from accountability.audit import AuditLog
from tests.accountability_helpers import TESTER, audit_requests, deploy
from vigil.run import StageProcess, drained

pytestmark = pytest.mark.services


def _frame(camera_id: str, index: int) -> FrameEvent:
    now = datetime.now(timezone.utc)
    return FrameEvent(camera_id=camera_id, source_ts=now, trace_id=f"t{index}", frame_index=index, width=2, height=2,
                      image_key=f"{camera_id}/{index}.jpg")


def test_topic_replay_from_a_point_in_time(ingest_settings, monkeypatch):
    settings, camera = ingest_settings, f"topic-{uuid.uuid4().hex[:6]}"
    ensure_topics(settings.kafka)
    producer = EventProducer(settings.kafka)
    for i in range(5):
        producer.send(FRAMES, _frame(camera, i))
    producer.flush()
    time.sleep(1.1)
    since = datetime.now(timezone.utc)
    for i in range(5, 10):
        producer.send(FRAMES, _frame(camera, i))
    producer.flush()
    time.sleep(1.1)
    until = datetime.now(timezone.utc)
    time.sleep(0.05)
    producer.send(FRAMES, _frame(camera, 10))
    producer.close()

    def indices(reads) -> list[int]:
        return [r.event.frame_index for r in reads if r.event is not None and r.event.camera_id == camera]

    # The broker's time index is not trusted (Tansu answers every lookup with offset 0): records are still cut by time.
    began = datetime.now(timezone.utc)
    with AuditLog(settings) as audit:
        assert indices(replay_topic(settings, TESTER, FRAMES.name, since, reason="test", audit=audit, idle_timeout_s=1.5)) \
            == list(range(5, 11))
        assert indices(replay_topic(settings, TESTER, FRAMES.name, since, reason="test", audit=audit, until=until,
                                    idle_timeout_s=1.5)) == list(range(5, 10))
    assert len(audit_requests(settings, began, action="view", subject=FRAMES.name)) == 2  # faces: every read is audited

    monkeypatch.setenv("VIGIL_KAFKA__BOOTSTRAP", settings.kafka.bootstrap)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["replay", "--topic", FRAMES.name, "--since", since.isoformat(), "--until", until.isoformat(),
                     "--idle-exit", "1.5", "--reason", "re-consume after an outage"]) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["frame_index"] for e in lines if e["camera_id"] == camera] == list(range(5, 10))
    assert audit_requests(settings, began, action="view", reason="re-consume after an outage")
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["replay", "--topic", "vigil.nope", "--since", since.isoformat()]) == 2
        assert main(["replay", "--topic", FRAMES.name, "--since", since.isoformat()]) == 2
    assert "unknown topic" in err.getvalue() and "needs a reason" in err.getvalue()


# --- recorded footage through running stages --------------------------------------------------

@dataclass
class Pipeline:
    settings: VigilSettings
    env: dict[str, str]
    stages: dict[str, StageProcess]

    def drained(self, frames: int) -> bool:
        """Every stage has handled what its upstream produced (``frames``: frames published so far)."""
        return drained({name: stage.scrape() for name, stage in self.stages.items()}, frames)


@pytest.fixture(scope="module")
def pipeline(stack, weights_dir, people, detector, embedder, tmp_path_factory):
    """detect, embed and match running as services on a broker of their own, with a watchlist of their own."""
    if not tansu_available():
        pytest.skip("needs Tansu for a broker of its own (the session's frames topic feeds other tests' stages)")
    from vigil.enroll import Enroller

    logs = tmp_path_factory.mktemp("replay-stages")
    with tansu_broker(logs) as kafka:
        collection = f"vigil_replay_{uuid.uuid4().hex[:8]}"
        base = stack.settings
        settings = base.model_copy(update={"kafka": kafka, "milvus": base.milvus.model_copy(update={"collection": collection})})
        ensure_topics(settings.kafka)
        enroller = Enroller(settings, detector=detector, embedder=embedder)
        try:
            for person in ("person-01", "person-02"):
                assert enroller.enroll(person, people[person][:3], actor=TESTER, reason="replay test",
                                       expires_at=datetime.now(timezone.utc) + timedelta(days=1)).enrolled
        finally:
            enroller.close()
        env = dict(os.environ, VIGIL_KAFKA__BOOTSTRAP=kafka.bootstrap, VIGIL_MILVUS__COLLECTION=collection,
                   VIGIL_MODELS__WEIGHTS_DIR=str(weights_dir), VIGIL_MODELS__TORCH_THREADS="1",
                   VIGIL_STAGE__LOG_FORMAT="json")
        stages: dict[str, StageProcess] = {}
        try:
            for name in (s.name for s in STREAM_STAGES):
                port = free_port()
                with open(logs / f"{name}.log", "wb") as log:
                    process = subprocess.Popen([sys.executable, "-m", "vigil.cli", "stage", name],
                                               env=dict(env, VIGIL_STAGE__HEALTH_PORT=str(port)),
                                               stdout=log, stderr=subprocess.STDOUT)
                stages[name] = StageProcess(name, port, process, logs / f"{name}.log")
            for stage in stages.values():
                wait_for(lambda: stage.ready() or stage.process.poll() is not None, 180, f"{stage.name} to be ready", 0.5)
                assert stage.process.poll() is None, stage.log_tail()
            yield Pipeline(settings, env, stages)
        finally:
            for stage in stages.values():
                stage.process.terminate()
            for stage in stages.values():
                stage.process.wait(30)
            from storage.vectors import Watchlist

            with Watchlist(settings.milvus) as watchlist:
                watchlist.drop()


def test_replaying_a_recorded_window_raises_the_live_runs_alerts(pipeline, people, tmp_path, monkeypatch, capsys):
    settings = with_ingest(pipeline.settings.model_copy(update={"stage": pipeline.settings.stage.model_copy(
        update={"health_port": 0, "log_format": "text"})}), status_dir=tmp_path / "status")
    camera = f"lobby-{uuid.uuid4().hex[:6]}"
    fps = 6
    scenes = [Scene(people["person-01"][3], fps, "person-01"), Scene(people["person-03"][0], fps, "person-03"),
              Scene(people["person-02"][3], fps, "person-02"), Scene(people["person-05"][0], fps, "person-05")]
    truth = make_footage(tmp_path / "lobby.mp4", scenes, fps=fps, size=(640, 360))

    # The live run: a camera recorded as it is ingested (run id None: live), under a live deployment.
    live_use = deploy(settings, [camera], starts_at=datetime.now(timezone.utc) - timedelta(minutes=1))
    started = time.monotonic()
    live_settings = with_ingest(settings, record=True, segment_s=1.0, target_fps=fps)
    report = IngestService(live_settings, [CameraSettings(id=camera, url=str(truth.path))]).run()[camera]
    assert (report.state, report.frames) == ("ended", truth.n_frames) and report.segments >= 2
    wait_for(lambda: pipeline.drained(truth.n_frames), 120, "the live frames to go through", 0.5)
    live = sorted(run_alerts(settings, None, idle_timeout_s=2), key=lambda a: a.source_ts)
    live = [a for a in live if a.camera_id == camera]
    live_s = time.monotonic() - started
    assert [a.person_id for a in live] == ["person-01", "person-02"]

    # Each alert points at the recorded segment that holds its moment, and that segment shows it.
    archive = FootageArchive(ObjectStore(settings.s3))
    for alert in live:
        segment = archive.segment_at(camera, alert.source_ts)
        assert segment is not None and segment.contains(alert.source_ts)
        with av.open(io.BytesIO(archive.store.get_bytes(archive.bucket, segment.key))) as container:
            stream = container.streams.video[0]
            offsets = [float(f.pts * stream.time_base) for f in container.decode(stream)]
        assert min(abs(o - (alert.source_ts - segment.start).total_seconds()) for o in offsets) < 1e-3
    live_frames = published(settings, [camera])[camera]
    t1, t2 = live_frames[0].source_ts, live_frames[-1].source_ts + timedelta(seconds=1 / fps)

    # The replay, as an operator would start it, under a retrospective deployment naming the persons searched for.
    wait_for(lambda: datetime.now(timezone.utc) > t2, 60, "the footage window to lie in the past")
    search = deploy(settings, [camera], kind="retrospective", persons=["person-01", "person-02"], starts_at=t1, ends_at=t2)
    started = time.monotonic()
    monkeypatch.setenv("VIGIL_KAFKA__BOOTSTRAP", settings.kafka.bootstrap)
    monkeypatch.setenv("VIGIL_STAGE__HEALTH_PORT", "0")
    monkeypatch.setenv("VIGIL_INGEST__STATUS_DIR", str(tmp_path / "status"))
    monkeypatch.setenv("VIGIL_INGEST__CAMERAS", json.dumps([{"id": camera, "url": "rtsp://lobby.example/1", "target_fps": fps}]))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["replay", "--camera", camera, "--from", t1.isoformat(), "--to", t2.isoformat(),
                     "--deployment", search.deployment_id, "--reason", "who was in the lobby"]) == 0
    summary = json.loads(out.getvalue().splitlines()[0])
    run_id = summary["run_id"]
    assert run_id.startswith("replay-") and summary["frames"] == truth.n_frames and summary["errors"] == []
    wait_for(lambda: pipeline.drained(2 * truth.n_frames), 120, "the replayed frames to go through", 0.5)
    replayed = sorted(run_alerts(settings, run_id, idle_timeout_s=2), key=lambda a: a.source_ts)
    replay_s = time.monotonic() - started

    # The replayed frames are the live ones, at the same capture times, under the replay run id.
    frames = published(settings, [camera])[camera]
    replay_frames = [f for f in frames if f.run_id == run_id]
    assert [f.source_ts for f in replay_frames] == pytest.approx([f.source_ts for f in live_frames], abs=timedelta(milliseconds=1))
    # The same alerts: same people, same moments, same scores; marked with the run id, never live.
    assert [(a.person_id, a.camera_id) for a in replayed] == [(a.person_id, a.camera_id) for a in live]
    for a, b in zip(replayed, live):
        assert abs((a.source_ts - b.source_ts).total_seconds()) < 1e-3 and a.score == pytest.approx(b.score, abs=1e-3)
        assert a.run_id == run_id and b.run_id is None and a.alert_id != b.alert_id
        assert a.deployment_id == search.deployment_id and b.deployment_id == live_use.deployment_id
    with capsys.disabled():
        print(f"\n  live run + alerts {live_s:.1f}s, replay + alerts {replay_s:.1f}s; alerts "
              f"{[(a.person_id, f'{a.score:.3f}') for a in replayed]}")


def test_replay_needs_a_covering_deployment_and_fails_clearly_without_footage(ingest_settings, monkeypatch, tmp_path):
    monkeypatch.setenv("VIGIL_KAFKA__BOOTSTRAP", ingest_settings.kafka.bootstrap)
    monkeypatch.setenv("VIGIL_STAGE__HEALTH_PORT", "0")
    monkeypatch.setenv("VIGIL_INGEST__STATUS_DIR", str(tmp_path))
    t1, t2 = datetime(2024, 5, 1, 12, tzinfo=timezone.utc), datetime(2024, 5, 1, 12, 5, tzinfo=timezone.utc)
    search = deploy(ingest_settings, ["nobody"], kind="retrospective", persons=["person-01"], starts_at=t1, ends_at=t2)
    live = deploy(ingest_settings, ["nobody"])
    window = ["--from", t1.isoformat(), "--to", t2.isoformat(), "--reason", "test"]
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["replay", "--camera", "other", *window, "--deployment", search.deployment_id]) == 2
        assert main(["replay", "--camera", "nobody", "--from", t1.isoformat(), "--to", "2024-05-01T12:06:00", "--reason", "test",
                     "--deployment", search.deployment_id]) == 2
        assert main(["replay", "--camera", "nobody", *window, "--deployment", live.deployment_id]) == 2
        assert main(["replay", "--camera", "nobody", *window]) == 2
    assert err.getvalue().count("does not cover") == 2 and "not an active retrospective deployment" in err.getvalue()
    assert "--deployment ID --reason WHY" in err.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["replay", "--camera", "nobody", *window, "--deployment", search.deployment_id]) == 3
    summary = json.loads(out.getvalue().splitlines()[0])
    assert summary["state"] == "failed" and "no recorded footage of camera nobody" in summary["errors"][0]
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["replay", "--camera", "nobody", "--from", "2024-05-01T12:05:00", "--to", "2024-05-01T12:00:00",
                     "--reason", "test", "--deployment", search.deployment_id]) == 2
    assert "before" in err.getvalue()
