"""Adjacent versions read each other's events: a field one side does not know is ignored, never refused.

During a rolling upgrade a stage of release N+1 may add an optional field that a stage of release N reads, and a
stage of N+1 reads what N wrote without it. Both directions are checked through the stages' own decoding
(``TopicSpec.decode``) and through the exported JSON Schemas, which is what a consumer in another language uses.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from schemas.events import AlertEvent, EmbeddingEvent, FaceEvent, FrameEvent, utc_now
from schemas.export import export_json_schemas
from schemas.topics import ALERTS, EMBEDDINGS, FACES, FRAMES

COMMON = {"camera_id": "cam-1", "source_ts": utc_now(), "trace_id": "t"}
BOX = {"x1": 1.0, "y1": 2.0, "x2": 30.0, "y2": 40.0}
KEYS = {"crop_key": "transient/c.jpg", "snapshot_key": "transient/s.jpg"}
EVENTS = {
    FRAMES: FrameEvent(**COMMON, frame_index=0, width=64, height=48, image_key="frames/f.jpg"),
    FACES: FaceEvent(**COMMON, frame_event_id="f", face_index=0, box=BOX, landmarks=[(1.0, 2.0)] * 5, det_prob=0.99,
                     crop_jpeg=b"\xff\xd8jpeg", frame_width=64, frame_height=48, quality=0.5, **KEYS),
    EMBEDDINGS: EmbeddingEvent(**COMMON, face_event_id="f-0", frame_event_id="f", face_index=0, box=BOX, det_prob=0.99,
                               model="m", embedding=[0.0] * 511 + [1.0], quality=0.5, **KEYS),
    ALERTS: AlertEvent(**COMMON, alert_id="a", person_id="p", score=0.7, threshold=0.5, face_event_id="f-0", box=BOX,
                       model="m", track_id="t1", track_score=0.66, track_faces=3, **KEYS),
}


def newer(payload: dict) -> dict:
    """The payload as a producer one release ahead writes it: a new optional field at the top and inside a nested object."""
    payload = {**payload, "added_in_a_later_release": {"any": ["shape"]}}
    if "box" in payload:
        payload["box"] = {**payload["box"], "rotation_deg": 12.5}
    return payload


def older(spec, payload: dict) -> dict:
    """The payload as a producer one release behind writes it: without the optional fields added since (default None)."""
    added = {name for name, field in spec.event.model_fields.items() if not field.is_required() and field.default is None}
    assert added, f"{spec.name}: no optional field to leave out"
    return {k: v for k, v in payload.items() if k not in added}


@pytest.mark.parametrize("spec", list(EVENTS), ids=lambda s: s.name)
def test_a_stage_reads_a_newer_producers_event(spec):
    payload = json.loads(spec.encode(EVENTS[spec]))
    decoded = spec.decode(json.dumps(newer(payload)).encode())  # what the stage runtime does; a refusal would dead-letter it
    assert decoded == EVENTS[spec]


@pytest.mark.parametrize("spec", list(EVENTS), ids=lambda s: s.name)
def test_a_stage_reads_an_older_producers_event(spec):
    payload = older(spec, json.loads(spec.encode(EVENTS[spec])))
    decoded = spec.decode(json.dumps(payload).encode())
    assert decoded.event_id == EVENTS[spec].event_id


@pytest.mark.parametrize("spec", list(EVENTS), ids=lambda s: s.name)
def test_the_exported_schema_accepts_both_neighbours(spec, tmp_path):
    export_json_schemas(tmp_path)
    event = EVENTS[spec]
    schema = json.loads((tmp_path / f"{event.event_type}.v{event.schema_version}.schema.json").read_text())
    assert schema["additionalProperties"] is True
    validator = jsonschema.Draft202012Validator(schema)
    payload = json.loads(spec.encode(event))
    validator.validate(newer(payload))
    validator.validate(older(spec, payload))


def test_a_malformed_event_is_still_refused():
    """Ignoring unknown fields is not accepting anything: a known field with a wrong value still fails."""
    payload = json.loads(ALERTS.encode(EVENTS[ALERTS]))
    with pytest.raises(ValueError):
        ALERTS.decode(json.dumps({**payload, "score": "high"}).encode())
    with pytest.raises(ValueError):
        ALERTS.decode(json.dumps({k: v for k, v in payload.items() if k != "person_id"}).encode())
