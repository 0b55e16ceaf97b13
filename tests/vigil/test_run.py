"""The whole pipeline, every stage its own process, over the real broker, S3 server and Milvus.

Two people are enrolled from some of their face-pairs photos; two cameras
show *other* photos of them, each followed by strangers. The alerts topic must
carry exactly (person-01, cam-a) and (person-02, cam-b), each raised while
that person was on screen; the alert evidence must exist in S3; strangers
raise nothing. A malformed event on the frames topic, and a camera whose file
is corrupt, must not stop the rest. The run is a deployment of its own: every
alert names it, and once the run is over no S3 object holds a frame or crop
that no alert refers to (the deletions audited with counts).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from accountability.audit import AuditLog
from runtime.kafka import EventReader
from schemas.events import AlertEvent, utc_now
from schemas.topics import ALERTS, DEAD_LETTERS, FRAMES
from storage.objects import ObjectStore
from synthetic.footage import Scene, make_footage
from tests.accountability_helpers import TESTER, audit_requests
from tests.kafka_helpers import send_raw

pytestmark = [pytest.mark.services, pytest.mark.models]

ENROLLED = {"person-01": 3, "person-02": 3}  # first N photos enrolled, the rest shown to the cameras
STRANGERS = ("person-03", "person-05")
FRAMES_PER_SCENE = 12
FPS = 6


@pytest.mark.slow
def test_pipeline_end_to_end(stack, people, tmp_path, monkeypatch):
    from vigil.enroll import Enroller
    from vigil.run import PipelineRun, run_deployment

    tag = uuid.uuid4().hex[:8]
    for role in ("evidence", "frames"):  # buckets of this run's own: everything in them is this run's
        monkeypatch.setenv(f"VIGIL_S3__{role.upper()}_BUCKET", f"test-{tag}-{role}")
    monkeypatch.setenv("VIGIL_RETENTION__PASSERBY_GRACE_S", "0.5")
    monkeypatch.setenv("VIGIL_MILVUS__COLLECTION", f"test_{tag}")  # a watchlist of its own: other tests enrol the same people
    settings = stack.settings

    # Each camera: the enrolled person's other photos, then two strangers.
    cameras = {"cam-a": "person-01", "cam-b": "person-02"}
    truths, sources = {}, []
    for camera, person in cameras.items():
        scenes = [Scene(photo, FRAMES_PER_SCENE, person) for photo in people[person][ENROLLED[person]:][:2]]
        scenes += [Scene(people[stranger][0], FRAMES_PER_SCENE, stranger) for stranger in STRANGERS]
        truths[camera] = make_footage(tmp_path / f"{camera}.mp4", scenes, fps=FPS, size=(640, 360))
        sources.append(f"{camera}={tmp_path / f'{camera}.mp4'}")
    # A third camera whose file is unreadable (the first bytes of a real clip, then garbage): it must fail alone.
    data = (tmp_path / "cam-a.mp4").read_bytes()
    (tmp_path / "broken.mp4").write_bytes(data[:64] + bytes(range(256)) * 64)
    sources.append(f"cam-broken={tmp_path / 'broken.mp4'}")
    # A malformed event already waiting on the frames topic.
    send_raw(settings.kafka, FRAMES.name, b'{"event_type": "frame", "camera_id": 7}', key=b"cam-a")

    monkeypatch.setenv("VIGIL_INGEST__TARGET_FPS", str(FPS))  # the stage processes read their settings from env
    run = PipelineRun(settings, sources, home=stack.home or tmp_path)
    began = utc_now()
    with AuditLog(settings) as audit, run_deployment(settings, TESTER, run, case="case-e2e", reason="end-to-end test",
                                                     persons=sorted(ENROLLED), audit=audit) as use:
        enroller = Enroller(settings, audit=audit)
        try:
            for person, count in ENROLLED.items():
                result = enroller.enroll(person, people[person][:count], actor=TESTER, reason="end-to-end test",
                                         expires_at=utc_now() + timedelta(days=1), deployment_id=use.deployment.deployment_id)
                assert len(result.enrolled) >= 2, result.refused
                use.entry_ids += result.entry_ids
        finally:
            enroller.close()
        summary = run.execute()

    # The alerts topic, read independently of the runner, as a downstream consumer would.
    with EventReader(settings.kafka, ALERTS) as reader:
        alerts = [r.event for r in reader.follow(idle_timeout_s=3) if isinstance(r.event, AlertEvent) and r.event.run_id == run.run_id]
    assert {(a.person_id, a.camera_id) for a in alerts} == {("person-01", "cam-a"), ("person-02", "cam-b")}
    assert {(a.deployment_id, a.case) for a in alerts} == {(use.deployment.deployment_id, "case-e2e")}
    assert sorted(a.alert_id for a in alerts) == sorted(a.alert_id for a in summary.alerts)

    # Each camera's clock: the source time of its first frame (frame index 0) in this run.
    with EventReader(settings.kafka, FRAMES) as reader:
        first_frame = {
            r.event.camera_id: r.event.source_ts
            for r in reader.follow(idle_timeout_s=3)
            if r.event is not None and r.event.run_id == run.run_id and r.event.frame_index == 0
        }
    store = ObjectStore(settings.s3)
    for alert in alerts:
        # Raised while that person was on screen, never during a stranger's scene.
        offset_s = (alert.source_ts - first_frame[alert.camera_id]).total_seconds()
        scene = next(s for s in truths[alert.camera_id].scenes if s.start_s <= offset_s + 1e-3 < s.end_s)
        assert scene.label == alert.person_id, (alert, scene)
        assert alert.score >= settings.match.threshold
        for key in (alert.snapshot_key, alert.crop_key):
            assert store.exists(settings.s3.evidence_bucket, key), key
            assert store.get_bytes(settings.s3.evidence_bucket, key)[:2] == b"\xff\xd8"  # a JPEG

    # Every good frame went through; the broken camera failed with a clear error and alone.
    assert summary.counts["frames"] == 2 * 4 * FRAMES_PER_SCENE
    assert summary.counts["faces"] > 0 and summary.counts["embeddings"] == summary.counts["faces"]
    assert "cam-broken" in summary.camera_errors and summary.camera_errors["cam-broken"]
    # The malformed event is in the dead-letter topic with the reason, not lost.
    with EventReader(settings.kafka, DEAD_LETTERS) as reader:
        letters = [r.event for r in reader.follow(idle_timeout_s=3) if r.event is not None]
    assert any(letter.source_topic == FRAMES.name and "camera_id" in letter.error for letter in letters)

    # Passers-by forgotten: of every frame and crop the run stored, only the alerts' evidence is left, in any bucket.
    evidence = set(store.list_keys(settings.s3.evidence_bucket))
    assert evidence == {key for a in alerts for key in (a.snapshot_key, a.crop_key)}, sorted(evidence)[:5]
    assert store.list_keys(settings.s3.frames_bucket) == []
    deleted = [e for e in audit_requests(settings, began, action="retention_delete") if e.details["rule"] == "passerby"]
    assert sum(e.details["objects"] for e in deleted) >= summary.counts["faces"]  # a crop per face, and their frames
    # The run's deployment ended, and the entries enrolled for it expired with it.
    actions = [e.action for e in audit_requests(settings, began, deployment_id=use.deployment.deployment_id)]
    assert actions[0] == "deployment_start" and actions[-1] == "deployment_end" and actions.count("enroll") == 2
    assert {e.subject for e in audit_requests(settings, began, action="expire")} >= set(ENROLLED)
