"""Redacted exports, checked on the pixels with the real detector: one sharp face left, the alerted one."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest
from PIL import Image

from detect.quality import laplacian_variance
from runtime.settings import DetectSettings
from schemas.events import Box
from tests.conftest import load_rgb

pytestmark = pytest.mark.models
SHARP = DetectSettings().quality.min_sharpness  # the quality gate's blur limit


@pytest.fixture(scope="module")
def finder(device):
    """The detector redaction uses (faces down to 20 px, probability 0.5): what it misses after redaction, nobody finds."""
    from runtime.settings import VigilSettings
    from vigil.export import redaction_detector

    settings = VigilSettings()
    settings.models.device = "cuda" if device.type == "cuda" else "cpu"
    return redaction_detector(settings)


def sharp_faces(detector, image: np.ndarray) -> list:
    return [f for f in detector.detect([image])[0] if f.prob >= 0.9 and laplacian_variance(f.crop) >= SHARP]


def group(face_pairs, identities) -> np.ndarray:
    """couple.jpg beside three other people: a snapshot with several faces."""
    tiles = [load_rgb(face_pairs / "couple.jpg", max_side=480)]
    tiles += [load_rgb(face_pairs / identities[p][0], max_side=360) for p in ("person-02", "person-03", "person-05")]
    height = max(t.shape[0] for t in tiles)
    return np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles], axis=1)


def test_redaction_leaves_exactly_one_sharp_face_the_alerted_one(finder, face_pairs, identities):
    from vigil.export import _iou, redact

    image = group(face_pairs, identities)
    before = sharp_faces(finder, image)
    assert len(before) >= 4, len(before)  # several sharp faces to begin with
    kept = before[1]
    redaction = redact(image, Box(x1=kept.box[0], y1=kept.box[1], x2=kept.box[2], y2=kept.box[3]), finder)
    after = sharp_faces(finder, redaction.image)
    assert len(after) == 1 and _iou(after[0].box, kept.box) > 0.7
    assert redaction.kept and redaction.blurred == len(finder.detect([image])[0]) - 1
    print(f"{len(before)} sharp faces before redaction, {len(after)} after; {redaction.blurred} blurred")


@pytest.mark.services
def test_vigil_export_writes_the_redacted_snapshot_and_audits_it(stack, finder, face_pairs, tmp_path, monkeypatch, capsys):
    from match.decision import alert_id
    from runtime.imaging import encode_jpeg
    from runtime.kafka import EventProducer
    from schemas.events import AlertEvent, utc_now
    from schemas.topics import ALERTS
    from storage.objects import ObjectStore
    from tests.accountability_helpers import audit_requests
    from vigil.cli import main

    settings = stack.settings
    image = load_rgb(face_pairs / "couple.jpg", max_side=960)
    faces = sharp_faces(finder, image)
    assert len(faces) == 2
    box = faces[0].box
    store = ObjectStore(settings.s3)
    store.ensure_buckets()
    camera = f"cam-{uuid.uuid4().hex[:6]}"
    ident = alert_id(uuid.uuid4().hex, "person-x")
    snapshot_key, crop_key = f"alerts/{camera}/{ident}-snapshot.jpg", f"alerts/{camera}/{ident}-crop.jpg"
    store.put_bytes(settings.s3.evidence_bucket, snapshot_key, encode_jpeg(image, 95), "image/jpeg")
    store.put_bytes(settings.s3.evidence_bucket, crop_key, encode_jpeg(faces[0].crop, 95), "image/jpeg")
    producer = EventProducer(settings.kafka)
    producer.send(ALERTS, AlertEvent(
        event_id=ident, alert_id=ident, camera_id=camera, source_ts=utc_now(), trace_id="t", person_id="person-x", score=0.8,
        threshold=0.5, face_event_id="f", box=Box(x1=box[0], y1=box[1], x2=box[2], y2=box[3]), snapshot_key=snapshot_key,
        crop_key=crop_key, model="m", deployment_id="dep-x", case="case-x"))
    producer.flush()
    producer.close()

    began = utc_now()
    assert main(["export", ident, "--reason", "disclosure to the court", "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([f"{ident}-snapshot.jpg", f"{ident}-crop.jpg", f"{ident}.json"])
    exported = np.asarray(Image.open(io.BytesIO((tmp_path / f"{ident}-snapshot.jpg").read_bytes())).convert("RGB"))
    assert len(sharp_faces(finder, exported)) == 1
    assert json.loads((tmp_path / f"{ident}.json").read_text())["faces_blurred"] == 1
    (event,) = audit_requests(settings, began, action="export")
    assert (event.subject, event.deployment_id, event.details["alert_id"]) == ("person-x", "dep-x", ident)
