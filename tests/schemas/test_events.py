import json

import jsonschema
import pytest
from pydantic import ValidationError

from schemas.events import EVENT_TYPES, Box, FaceEvent, FrameEvent, utc_now
from schemas.export import export_json_schemas
from schemas.topics import ALL_TOPICS, FRAMES


def frame(**overrides):
    fields = dict(camera_id="cam-a", source_ts=utc_now(), trace_id="t1", frame_index=3, width=640, height=480, image_jpeg=b"\xff\xd8\x00\x01")
    fields.update(overrides)
    return FrameEvent(**fields)


def test_round_trip_keeps_bytes_and_version():
    event = frame()
    raw = FRAMES.encode(event)
    assert b'"image_jpeg":"/9gAAQ=="' in raw  # plain base64, no line breaks
    decoded = FRAMES.decode(raw)
    assert decoded == event and decoded.schema_version == 1 and decoded.event_type == "frame"


def test_malformed_payloads_are_refused():
    with pytest.raises(ValidationError):
        FRAMES.decode(b'{"event_type": "frame", "camera_id": 7}')
    with pytest.raises(ValidationError):
        FRAMES.decode(b"not json")
    with pytest.raises(ValidationError):
        frame(camera_id="")


def test_registry_names_every_event_type_once():
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names))
    assert {t.event for t in ALL_TOPICS} == set(EVENT_TYPES)
    assert all(t.name.endswith(f".v{t.event.model_fields['schema_version'].default}") for t in ALL_TOPICS)


def test_exported_json_schema_validates_real_payloads(tmp_path):
    paths = export_json_schemas(tmp_path)
    assert len(paths) == len(EVENT_TYPES)
    schema = json.loads((tmp_path / "face.v1.schema.json").read_text())
    face = FaceEvent(
        camera_id="cam-a", source_ts=utc_now(), trace_id="t", frame_event_id="f", face_index=0,
        box=Box(x1=1, y1=2, x2=30, y2=40), landmarks=[(1.0, 2.0)] * 5, det_prob=0.99, crop_jpeg=b"abc",
        crop_key="transient/x.jpg", snapshot_key="transient/y.jpg", frame_width=640, frame_height=480,
    )
    jsonschema.validate(json.loads(face.model_dump_json()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**json.loads(face.model_dump_json()), "det_prob": 2}, schema)
