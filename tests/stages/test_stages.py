"""Each stream stage's processor against the real S3 server and Milvus, with real photos.

(The Kafka side of the stages is covered by tests/runtime/test_stream_stage.py
and the end-to-end test.)
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from runtime.imaging import decode_jpeg, encode_jpeg
from runtime.stream import BadEvent
from schemas.events import EmbeddingEvent, FaceEvent, FrameEvent, utc_now
from schemas.topics import ALERTS, EMBEDDINGS, FACES
from storage.objects import ObjectStore
from storage.vectors import Watchlist
from tests.conftest import load_rgb

pytestmark = [pytest.mark.services, pytest.mark.models]


def frame_event(image: np.ndarray, camera: str = "cam-a") -> FrameEvent:
    return FrameEvent(
        camera_id=camera, source_ts=utc_now(), trace_id=uuid.uuid4().hex, frame_index=0,
        width=image.shape[1], height=image.shape[0], image_jpeg=encode_jpeg(image, 90),
    )


@pytest.fixture
def stage_settings(stack, weights_dir):
    settings = stack.settings
    settings.models.weights_dir = weights_dir
    settings.milvus.collection = f"test_{uuid.uuid4().hex[:8]}"  # a watchlist of this test's own
    return settings


def test_detect_publishes_one_face_per_face_with_evidence_in_s3(stage_settings, face_pairs):
    from detect.stage import DetectProcessor

    processor = DetectProcessor(stage_settings)
    processor.start()
    one_face = frame_event(load_rgb(face_pairs / "img1.jpg", max_side=960))
    empty = frame_event(np.full((360, 640, 3), 90, np.uint8))
    outputs = processor.process([one_face, empty])
    assert [spec for spec, _ in outputs] == [FACES]
    face: FaceEvent = outputs[0][1]
    assert face.frame_event_id == one_face.event_id and face.event_id == f"{one_face.event_id}-f0"
    assert face.det_prob > 0.95 and face.box.width > 40 and len(face.landmarks) == 5
    assert decode_jpeg(face.crop_jpeg).shape == (160, 160, 3)
    store = ObjectStore(stage_settings.s3)
    bucket = stage_settings.s3.evidence_bucket
    assert store.get_bytes(bucket, face.snapshot_key) == one_face.image_jpeg  # the frame, not re-encoded
    assert store.get_bytes(bucket, face.crop_key) == face.crop_jpeg
    assert face.crop_key.startswith("transient/cam-a/")


def test_detect_refuses_an_undecodable_frame(stage_settings):
    from detect.stage import DetectProcessor

    processor = DetectProcessor(stage_settings)
    processor.start()
    bad = FrameEvent(camera_id="cam-a", source_ts=utc_now(), trace_id="t", frame_index=0, width=2, height=2, image_jpeg=b"not a jpeg")
    with pytest.raises(BadEvent, match="undecodable JPEG"):
        processor.process([bad])


def face_event(crop: np.ndarray, camera: str = "cam-a") -> FaceEvent:
    return FaceEvent(
        camera_id=camera, source_ts=utc_now(), trace_id="t", frame_event_id=uuid.uuid4().hex, face_index=0,
        box={"x1": 10, "y1": 10, "x2": 110, "y2": 130}, landmarks=[(0.0, 0.0)] * 5, det_prob=0.99,
        crop_jpeg=encode_jpeg(crop, 95), crop_key="transient/k.jpg", snapshot_key="transient/s.jpg",
        frame_width=640, frame_height=480,
    )


def test_embed_gives_unit_512d_vectors(stage_settings, detector, face_pairs):
    from embed.stage import EmbedProcessor

    processor = EmbedProcessor(stage_settings)
    processor.start()
    crop = detector.detect([load_rgb(face_pairs / "img1.jpg", max_side=960)])[0][0].crop
    outputs = processor.process([face_event(crop), face_event(crop)])
    assert [spec for spec, _ in outputs] == [EMBEDDINGS, EMBEDDINGS]
    vector = np.asarray(outputs[0][1].embedding)
    assert vector.shape == (512,) and abs(np.linalg.norm(vector) - 1) < 1e-4
    assert np.allclose(outputs[0][1].embedding, outputs[1][1].embedding, atol=1e-5)


def embedding_event(vector: np.ndarray, camera: str, crop_key: str, snapshot_key: str) -> EmbeddingEvent:
    face_id = uuid.uuid4().hex
    return EmbeddingEvent(
        camera_id=camera, source_ts=utc_now(), trace_id="t", face_event_id=face_id, frame_event_id="f", face_index=0,
        box={"x1": 0, "y1": 0, "x2": 50, "y2": 60}, det_prob=0.99, crop_key=crop_key, snapshot_key=snapshot_key,
        model="test", embedding=vector.tolist(),
    )


def test_match_alerts_on_enrolled_person_once_and_copies_evidence(stage_settings, detector, embedder, face_pairs, identities):
    from match.stage import MatchProcessor

    def vector(name):
        return embedder.embed([detector.detect([load_rgb(face_pairs / name, max_side=960)])[0][0].crop])[0]

    person = identities["person-01"]
    watchlist = Watchlist(stage_settings.milvus)
    watchlist.ensure_collection()
    watchlist.add("person-01", np.stack([vector(person[0]), vector(person[1])]), ["p/1.jpg", "p/2.jpg"], enrolled_by="test", reason="test")

    store = ObjectStore(stage_settings.s3)
    store.ensure_buckets()
    bucket = stage_settings.s3.evidence_bucket
    store.put_bytes(bucket, "transient/cam-a/x/snap.jpg", b"\xff\xd8snap", "image/jpeg")
    store.put_bytes(bucket, "transient/cam-a/x/crop.jpg", b"\xff\xd8crop", "image/jpeg")

    processor = MatchProcessor(stage_settings)
    processor.start()
    same = vector(person[3])
    stranger = vector(identities["person-03"][0])
    events = [embedding_event(v, "cam-a", "transient/cam-a/x/crop.jpg", "transient/cam-a/x/snap.jpg") for v in (same, same, stranger)]
    watchlist.search(same[None], consistency_level="Strong")  # the index has seen the enrolment
    outputs = processor.process(events)
    assert [spec for spec, _ in outputs] == [ALERTS]  # the repeat is within the cooldown; the stranger is below threshold
    alert = outputs[0][1]
    assert alert.person_id == "person-01" and alert.score >= stage_settings.match.threshold
    assert alert.face_event_id == events[0].face_event_id
    assert store.get_bytes(bucket, alert.crop_key) == b"\xff\xd8crop"
    assert store.get_bytes(bucket, alert.snapshot_key) == b"\xff\xd8snap"
    assert alert.crop_key.startswith("alerts/cam-a/")
    # The same face redelivered later gives the same alert id (consumers deduplicate on it).
    processor.gate = type(processor.gate)(stage_settings.match.cooldown_s)
    again = processor.process([events[0]])
    assert again[0][1].alert_id == alert.alert_id
    watchlist.drop()
