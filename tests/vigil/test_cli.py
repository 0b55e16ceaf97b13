"""The `vigil` command's small subcommands, against the real broker where they need one."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from match.decision import alert_id
from runtime.kafka import EventProducer
from schemas.events import EVENT_TYPES, AlertEvent, utc_now
from schemas.topics import ALERTS
from vigil.cli import main


def test_schemas_export_writes_one_schema_per_event_type(tmp_path, capsys):
    assert main(["schemas", "export", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert len(written) == len(EVENT_TYPES) and "alert.v1.schema.json" in written
    assert json.loads((tmp_path / "alert.v1.schema.json").read_text())["x-vigil-topic"] == ALERTS.name


def test_enroll_needs_a_reason(capsys):
    with pytest.raises(SystemExit):
        main(["enroll", "someone", "photo.jpg"])
    assert "--reason" in capsys.readouterr().err


def vigil_alerts(*args: str) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "vigil.cli", "alerts", *args, "--idle-exit", "4"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.services
def test_alerts_follows_from_the_beginning_or_a_point_in_time(stack):
    camera = f"cam-{uuid.uuid4().hex[:6]}"
    face = uuid.uuid4().hex
    ident = alert_id(face, "person-y")
    producer = EventProducer(stack.settings.kafka)
    producer.send(ALERTS, AlertEvent(
        event_id=ident, alert_id=ident, camera_id=camera, source_ts=utc_now(), trace_id="t", person_id="person-y",
        score=0.7, threshold=0.5, face_event_id=face, box={"x1": 0, "y1": 0, "x2": 9, "y2": 9},
        snapshot_key="alerts/s.jpg", crop_key="alerts/c.jpg", model="m",
    ))
    producer.close()
    assert [a["alert_id"] for a in vigil_alerts("--from-beginning") if a["camera_id"] == camera] == [ident]
    later = (datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat()
    assert [a for a in vigil_alerts("--since", later) if a["camera_id"] == camera] == []
