"""EmbedProcessor on real face crops."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from runtime.imaging import encode_jpeg
from schemas.events import FaceEvent, utc_now
from schemas.topics import EMBEDDINGS
from tests.conftest import load_rgb

pytestmark = [pytest.mark.services, pytest.mark.models]


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
