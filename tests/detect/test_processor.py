"""DetectProcessor against the real S3 server, with real photos (the Kafka side: tests/runtime/test_stream_stage.py)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from runtime.imaging import decode_jpeg, encode_jpeg
from runtime.stream import BadEvent
from schemas.events import FaceEvent, FrameEvent, utc_now
from schemas.topics import FACES
from storage.objects import ObjectStore
from tests.accountability_helpers import deploy
from tests.conftest import load_rgb

pytestmark = [pytest.mark.services, pytest.mark.models]
CAMERAS = ["cam-a", "cam-far", "cam-near", "cam-blur"]


@pytest.fixture(autouse=True)
def deployed(stage_settings):
    """A live deployment over the cameras of these tests (the processor reads the deployments when it starts)."""
    return deploy(stage_settings, CAMERAS)


@pytest.fixture
def started():
    """Start processors for the test; stop them (their table of deployments) after it."""
    processors = []

    def start(processor):
        processor.start()
        processors.append(processor)
        return processor

    yield start
    for processor in processors:
        processor.stop()


def frame_event(image: np.ndarray, camera: str = "cam-a") -> FrameEvent:
    return FrameEvent(
        camera_id=camera, source_ts=utc_now(), trace_id=uuid.uuid4().hex, frame_index=0,
        width=image.shape[1], height=image.shape[0], image_jpeg=encode_jpeg(image, 90),
    )



def test_detect_publishes_one_face_per_face_with_evidence_in_s3(started, stage_settings, face_pairs):
    from detect.stage import DetectProcessor

    processor = started(DetectProcessor(stage_settings))
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


def test_detect_gate_counts_what_it_rejects_per_camera_and_reason(started, stage_settings, face_pairs):
    from PIL import Image, ImageFilter
    from prometheus_client import REGISTRY

    from detect.stage import DetectProcessor
    from runtime.settings import FaceQualityOverrides

    def rejected(camera, reason):
        return REGISTRY.get_sample_value("vigil_faces_rejected_total", {"stage": "detect", "camera": camera, "reason": reason}) or 0

    stage_settings.detect.quality.per_camera = {"cam-far": FaceQualityOverrides(min_face_px=2000)}
    processor = started(DetectProcessor(stage_settings))
    photo = load_rgb(face_pairs / "img1.jpg", max_side=960)
    blurred = np.array(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(8)))
    before = rejected("cam-far", "small"), rejected("cam-blur", "blurry")
    outputs = processor.process([frame_event(photo, "cam-far"), frame_event(photo, "cam-near"), frame_event(blurred, "cam-blur")])
    # The same face: rejected as too small for cam-far, accepted for cam-near (with its quality score), blurred: rejected.
    assert [event.camera_id for _, event in outputs] == ["cam-near"]
    assert 0 < outputs[0][1].quality <= 1
    assert (rejected("cam-far", "small"), rejected("cam-blur", "blurry")) == (before[0] + 1, before[1] + 1)


def test_detect_refuses_an_undecodable_frame(started, stage_settings):
    from detect.stage import DetectProcessor

    processor = started(DetectProcessor(stage_settings))
    bad = FrameEvent(camera_id="cam-a", source_ts=utc_now(), trace_id="t", frame_index=0, width=2, height=2, image_jpeg=b"not a jpeg")
    with pytest.raises(BadEvent, match="undecodable JPEG"):
        processor.process([bad])


def test_detect_drops_frames_no_active_deployment_covers_unread(started, stage_settings, face_pairs):
    from prometheus_client import REGISTRY

    from detect.stage import DetectProcessor

    processor = started(DetectProcessor(stage_settings))
    photo = load_rgb(face_pairs / "img1.jpg", max_side=960)
    outside = frame_event(photo, f"cam-{uuid.uuid4().hex[:6]}")
    replayed = frame_event(photo, "cam-a").model_copy(update={"run_id": "replay-not-bound"})  # a run no deployment is bound to
    assert processor.process([outside, replayed]) == []
    counted = REGISTRY.get_sample_value("vigil_frames_outside_deployments_total", {"stage": "detect", "camera": outside.camera_id})
    assert counted == 1
    store = ObjectStore(stage_settings.s3)
    assert store.list_keys(stage_settings.s3.evidence_bucket, f"transient/{outside.camera_id}/") == []
    assert [spec for spec, _ in processor.process([frame_event(photo, "cam-a")])] == [FACES]
