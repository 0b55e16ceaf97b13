"""MatchProcessor against the real S3 server and Milvus with real photos, alone and fed by the detect and embed processors."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from runtime.imaging import encode_jpeg
from runtime.kafka import EventProducer
from schemas.events import EmbeddingEvent, FrameEvent, utc_now
from schemas.topics import ALERTS, TRACKS
from storage.objects import ObjectStore
from storage.vectors import Watchlist
from tests.accountability_helpers import audit_requests, deploy
from tests.conftest import load_rgb
from tests.ingest.conftest import wait_for

LATER = datetime.now(timezone.utc) + timedelta(days=1)  # watchlist entries expire; these outlive the test

pytestmark = [pytest.mark.services, pytest.mark.models]

T0 = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
FPS = 6


def embedding_event(vector: np.ndarray, camera: str, crop_key: str, snapshot_key: str, *, t: float = 0.0,
                    run_id: str | None = None) -> EmbeddingEvent:
    frame_id = uuid.uuid4().hex
    return EmbeddingEvent(
        camera_id=camera, source_ts=T0 + timedelta(seconds=t), trace_id=frame_id, run_id=run_id,
        face_event_id=f"{frame_id}-f0", frame_event_id=frame_id, face_index=0,
        box={"x1": 0, "y1": 0, "x2": 50, "y2": 60}, det_prob=0.99, crop_key=crop_key, snapshot_key=snapshot_key,
        model="test", embedding=vector.tolist(),
    )


def test_match_alerts_once_per_track_and_copies_evidence(stage_settings, detector, embedder, face_pairs, identities):
    from match.stage import MatchProcessor

    def vector(name):
        return embedder.embed([detector.detect([load_rgb(face_pairs / name, max_side=960)])[0][0].crop])[0]

    person = identities["person-01"]
    watchlist = Watchlist(stage_settings.milvus)
    watchlist.ensure_collection()
    watchlist.add("person-01", np.stack([vector(person[0]), vector(person[1])]), ["p/1.jpg", "p/2.jpg"], enrolled_by="test", reason="test", expires_at=LATER)

    store = ObjectStore(stage_settings.s3)
    store.ensure_buckets()
    bucket = stage_settings.s3.evidence_bucket
    store.put_bytes(bucket, "transient/cam-a/x/snap.jpg", b"\xff\xd8snap", "image/jpeg")
    store.put_bytes(bucket, "transient/cam-a/x/crop.jpg", b"\xff\xd8crop", "image/jpeg")

    run_id = uuid.uuid4().hex
    deployment = deploy(stage_settings, ["cam-a"], run_ids=(run_id,), starts_at=T0 - timedelta(hours=1))
    processor = MatchProcessor(stage_settings)
    processor.start()
    same = vector(person[3])
    stranger = vector(identities["person-03"][0])
    keys = ("transient/cam-a/x/crop.jpg", "transient/cam-a/x/snap.jpg")
    events = [embedding_event(v, "cam-a", *keys, t=i / 6, run_id=run_id) for i, v in enumerate((same, same, same, stranger))]
    watchlist.search(same[None], consistency_level="Strong")  # the index has seen the enrolment
    outputs = processor.process(events)
    # One alert, at the second face (min_track_faces=2); the third face is on the same track; the stranger is below threshold.
    assert [spec for spec, _ in outputs] == [ALERTS]
    alert = outputs[0][1]
    assert alert.person_id == "person-01" and alert.score >= stage_settings.match.threshold
    assert alert.track_id and alert.track_faces == 2 and alert.track_score >= stage_settings.match.threshold
    assert alert.face_event_id == events[0].face_event_id  # the best face (a tie keeps the first)
    assert store.get_bytes(bucket, alert.crop_key) == b"\xff\xd8crop"
    assert store.get_bytes(bucket, alert.snapshot_key) == b"\xff\xd8snap"
    assert alert.crop_key.startswith("alerts/cam-a/")
    assert (alert.deployment_id, alert.case) == (deployment.deployment_id, deployment.case)
    # Redelivered (a crash after the state was written, before the commit), the faces are not applied twice.
    assert processor.process(events[:2]) == []
    # The state goes to the changelog (as the runtime delivers checkpoints); a fresh instance carries the same track on.
    producer = EventProducer(stage_settings.kafka)
    for spec, state in processor.checkpoint():
        producer.send(spec, state).get(timeout=30)
    producer.close()
    fresh = MatchProcessor(stage_settings)
    fresh.start()
    assert fresh.process(events[:2]) == []
    restored = fresh.cameras[(run_id, "cam-a")].tracks  # person-01's, and the stranger's
    assert sorted((t.track_id == alert.track_id, t.faces, t.alerted) for t in restored) == [(False, 1, ()), (True, 3, ("person-01",))]
    processor.stop()
    fresh.stop()
    watchlist.drop()


# -- footage through detect, embed and match ------------------------------------------------------------------

def footage_frames(path, camera: str, run_id: str) -> list[FrameEvent]:
    """The clip's frames as ingest would publish them: JPEG inline, source time from the frame rate."""
    import av

    events = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            rgb = frame.to_ndarray(format="rgb24")
            events.append(FrameEvent(
                camera_id=camera, source_ts=T0 + timedelta(seconds=i / FPS), trace_id=uuid.uuid4().hex, run_id=run_id,
                frame_index=i, width=rgb.shape[1], height=rgb.shape[0], image_jpeg=encode_jpeg(rgb, 90),
            ))
    return events


@pytest.fixture
def pipeline(stage_settings, detector, embedder, face_pairs, identities):
    """detect, embed and match processors on one watchlist where person-01 is enrolled from three photos."""
    from detect.stage import DetectProcessor
    from embed.stage import EmbedProcessor
    from match.stage import MatchProcessor

    enrolled = identities["person-01"][:3]
    vectors = embedder.embed([detector.detect([load_rgb(face_pairs / name, max_side=960)])[0][0].crop for name in enrolled])
    watchlist = Watchlist(stage_settings.milvus)
    watchlist.ensure_collection()
    watchlist.add("person-01", vectors, [f"p/{name}" for name in enrolled], enrolled_by="test", reason="test", expires_at=LATER)
    watchlist.search(vectors[:1], consistency_level="Strong")  # the index has seen the enrolment
    stage_settings.match.track_idle_s = 300.0  # the models take seconds per batch here: tracks end by their gap
    stage_settings.retention.passerby_grace_s = 0.5
    run_id = uuid.uuid4().hex
    deployment = deploy(stage_settings, ["cam-x", "cam-y", "cam-z"], run_ids=(run_id,), case="case-pipeline",
                        starts_at=T0 - timedelta(hours=1))
    stages = [DetectProcessor(stage_settings), EmbedProcessor(stage_settings), MatchProcessor(stage_settings)]
    for stage in stages:
        stage.start()

    def run(frames: list[FrameEvent], batch: int = 8) -> tuple[int, list]:
        """Frames through the three stages, a batch at a time; returns (faces published, match outputs)."""
        detect, embed, match = stages
        faces, outputs = 0, []
        for start in range(0, len(frames), batch):
            found = [event for _, event in detect.process(frames[start:start + batch])]
            faces += len(found)
            if found:
                outputs += match.process([event for _, event in embed.process(found)])
        return faces, outputs

    run.match = stages[2]
    run.watchlist = watchlist
    run.templates = vectors
    run.run_id, run.deployment = run_id, deployment
    yield run
    for stage in stages:
        stage.stop()
    watchlist.drop()


def test_an_enrolled_person_crossing_the_scene_gives_exactly_one_alert(pipeline, stage_settings, face_pairs, identities, tmp_path):
    from synthetic.footage import Scene, make_footage

    run_id = pipeline.run_id
    scenes = [Scene(None, 6, None), Scene(face_pairs / identities["person-01"][3], 48, "person-01"), Scene(None, 18, None)]
    truth = make_footage(tmp_path / "cross.mp4", scenes, fps=FPS, size=(640, 360))
    frames = footage_frames(truth.path, "cam-x", run_id)
    faces, outputs = pipeline(frames)
    assert faces >= 40  # the face was found in (nearly) every frame of its scene
    alerts = [event for spec, event in outputs if spec is ALERTS]
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert (alert.person_id, alert.camera_id, alert.run_id) == ("person-01", "cam-x", run_id)
    assert alert.score >= alert.threshold and alert.track_score >= alert.threshold and alert.track_faces >= 2
    offset_s = (alert.source_ts - T0).total_seconds()
    assert truth.scenes[1].start_s <= offset_s < truth.scenes[1].end_s  # raised on a face of that scene
    # One track held every face; it is still open (no later face of the camera has ended it).
    (track,) = pipeline.match.cameras[(run_id, "cam-x")].tracks
    assert track.track_id == alert.track_id and track.faces == faces and track.alerted == ("person-01",)
    # A face after the gap ends it, and the track's end is published.
    again = uuid.uuid4().hex
    later = frames[6 + 10].model_copy(update={"event_id": again, "trace_id": again, "frame_index": len(frames),
                                              "source_ts": T0 + timedelta(seconds=60)})
    _, outputs = pipeline([later])
    ended = [event for spec, event in outputs if spec is TRACKS]
    assert [(e.track_id, e.reason, e.faces, e.alerted_person_ids) for e in ended] == [(alert.track_id, "gap", faces, ["person-01"])]
    assert not [event for spec, event in outputs if spec is ALERTS]  # the new track has one face: not enough yet


def test_a_similar_looking_stranger_below_the_threshold_gives_none(pipeline, stage_settings, detector, embedder, face_pairs,
                                                                    identities, tmp_path):
    from synthetic.footage import Scene, make_footage

    # The stranger most like person-01 (highest score against the enrolled photos) that stays below the threshold.
    threshold = stage_settings.match.threshold
    candidates = []
    for person, photos in identities.items():
        if person == "person-01":
            continue
        for name in photos:
            faces = detector.detect([load_rgb(face_pairs / name, max_side=960)])[0]
            if len(faces) == 1:
                score = float((pipeline.templates @ embedder.embed([faces[0].crop])[0]).max())
                candidates.append((score, person, name))
    score, person, name = max(c for c in candidates if c[0] < threshold - 0.05)
    assert score > 0.2, candidates  # a lookalike by this model's standards (strangers score about 0)

    run_id = pipeline.run_id
    truth = make_footage(tmp_path / "stranger.mp4", [Scene(face_pairs / name, 48, person)], fps=FPS, size=(640, 360))
    faces, outputs = pipeline(footage_frames(truth.path, "cam-y", run_id))
    assert faces >= 40
    assert [event for spec, event in outputs if spec is ALERTS] == []
    tracks = pipeline.match.cameras[(run_id, "cam-y")].tracks
    assert sum(t.faces for t in tracks) == faces and not any(t.alerted for t in tracks)
    evidence = [t.persons["person-01"] for t in tracks if "person-01" in t.persons]
    assert evidence and max(e.best_score for e in evidence) < threshold


def test_outside_deployments_nothing_inside_named_alerts_and_passers_by_forgotten_within_seconds(
        pipeline, stage_settings, face_pairs, identities, tmp_path):
    from synthetic.footage import Scene, make_footage

    scenes = [Scene(face_pairs / identities["person-01"][3], 18, "person-01"), Scene(face_pairs / identities["person-03"][0], 18, "person-03")]
    truth = make_footage(tmp_path / "two.mp4", scenes, fps=FPS, size=(640, 360))
    store, bucket = ObjectStore(stage_settings.s3), stage_settings.s3.evidence_bucket

    # Outside every deployment (a run none is bound to): the same footage raises nothing, and nothing is stored.
    faces, outputs = pipeline(footage_frames(truth.path, "cam-z", uuid.uuid4().hex))
    assert (faces, outputs) == (0, [])
    assert store.list_keys(bucket, "transient/cam-z/") == []

    # Inside: one alert, naming its deployment and case.
    began = utc_now()
    frames = footage_frames(truth.path, "cam-z", pipeline.run_id)
    faces, outputs = pipeline(frames)
    (alert,) = [event for spec, event in outputs if spec is ALERTS]
    assert (alert.person_id, alert.deployment_id, alert.case) == ("person-01", pipeline.deployment.deployment_id, "case-pipeline")

    # A face a minute later ends what is still open (person-01's track ended in the stranger's scene, by its gap);
    # within seconds every ended track's frames and crops are gone, matched or not.
    again = uuid.uuid4().hex
    later = frames[5].model_copy(update={"event_id": again, "trace_id": again, "source_ts": T0 + timedelta(seconds=60)})
    _, more = pipeline([later])
    assert sorted(e.alerted_person_ids for spec, e in outputs + more if spec is TRACKS) == [[], ["person-01"]]
    open_track = {k for k in store.list_keys(bucket, "transient/cam-z/") if again in k}
    ended_at = time.monotonic()
    wait_for(lambda: set(store.list_keys(bucket, "transient/cam-z/")) == open_track, 15, "the ended tracks' evidence to go")
    forgotten_s = time.monotonic() - ended_at
    assert len(open_track) == 2 and forgotten_s < 5
    assert store.get_bytes(bucket, alert.crop_key)[:2] == b"\xff\xd8" and store.exists(bucket, alert.snapshot_key)
    deletions = [e for e in audit_requests(stage_settings, began, action="retention_delete") if e.details["rule"] == "passerby"]
    assert sum(e.details["objects"] for e in deletions) == 2 * faces and deletions[0].subject == f"s3://{bucket}"  # a frame, a crop
    assert set(deletions[0].details) == {"rule", "bucket", "objects", "via"}  # counts only: no key, no face

    # When match stops, the open track lives on in the changelog, and so does its evidence (for the next instance).
    pipeline.match.stop()
    assert set(store.list_keys(bucket, "transient/cam-z/")) == open_track
    assert sorted(store.list_keys(bucket, "alerts/cam-z/")) == sorted([alert.crop_key, alert.snapshot_key])
    print(f"passers-by forgotten {forgotten_s:.1f} s after their track ended")
