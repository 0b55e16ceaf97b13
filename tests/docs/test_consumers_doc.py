"""docs/examples/alerts_consumer.py, the consumer the docs show, against the real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from match.decision import alert_id
from runtime.kafka import EventProducer
from schemas.events import AlertEvent, utc_now
from schemas.export import export_json_schemas
from schemas.topics import ALERTS
from tests.kafka_helpers import send_raw

pytestmark = pytest.mark.services
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "alerts_consumer.py"


@pytest.mark.slow
def test_example_consumer_validates_and_deduplicates(stack, tmp_path):
    settings = stack.settings
    export_json_schemas(tmp_path / "schemas")
    face = uuid.uuid4().hex
    ident = alert_id(face, "person-x")
    alert = AlertEvent(
        event_id=ident, alert_id=ident, camera_id="cam-doc", source_ts=utc_now(), trace_id="t", person_id="person-x",
        score=0.8, threshold=0.5, face_event_id=face, box={"x1": 0, "y1": 0, "x2": 10, "y2": 10},
        snapshot_key="alerts/s.jpg", crop_key="alerts/c.jpg", model="m",
    )
    producer = EventProducer(settings.kafka)
    producer.send(ALERTS, alert)
    producer.send(ALERTS, alert)  # a redelivery
    producer.flush()
    send_raw(settings.kafka, ALERTS.name, b'{"event_type": "alert"}', key=b"cam-doc")
    producer.close()

    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--bootstrap", settings.kafka.bootstrap, "--schemas", str(tmp_path / "schemas"),
         "--group", f"doc-{uuid.uuid4().hex[:6]}", "--idle-exit", "30"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    mine = [p for p in printed if p["camera_id"] == "cam-doc"]
    assert [p["alert_id"] for p in mine] == [ident]  # once, despite the redelivery
    assert "skipping invalid message" in result.stderr
