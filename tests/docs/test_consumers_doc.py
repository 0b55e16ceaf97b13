"""docs/examples/alerts_consumer.py, the consumer the docs show, and the published contract (docs/schemas)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path

import certifi
import pytest
from kafka import KafkaConsumer

from match.decision import alert_id
from runtime.kafka import EventProducer
from schemas.events import AlertEvent, utc_now
from schemas.export import export_json_schemas
from schemas.topics import ALERTS
from tests.kafka_helpers import send_raw

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLE = DOCS / "examples" / "alerts_consumer.py"


def example():
    spec = importlib.util.spec_from_file_location("alerts_consumer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alert(run_id: str | None = None) -> AlertEvent:
    face = uuid.uuid4().hex
    ident = alert_id(face, "person-x")
    return AlertEvent(
        event_id=ident, alert_id=ident, camera_id="cam-doc", source_ts=utc_now(), trace_id="t", person_id="person-x",
        score=0.8, threshold=0.5, face_event_id=face, box={"x1": 0, "y1": 0, "x2": 10, "y2": 10},
        snapshot_key="alerts/s.jpg", crop_key="alerts/c.jpg", model="m", run_id=run_id,
    )


@pytest.mark.services
@pytest.mark.slow
def test_example_consumer_skips_replays_validates_and_deduplicates(stack):
    settings = stack.settings
    live, replayed = alert(), alert(run_id="replay-20261130T100000-abcdef")
    producer = EventProducer(settings.kafka)
    producer.send(ALERTS, live)
    producer.send(ALERTS, live)  # a redelivery
    producer.send(ALERTS, replayed)
    producer.flush()
    send_raw(settings.kafka, ALERTS.name, b'{"event_type": "alert"}', key=b"cam-doc")
    producer.close()

    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--bootstrap", settings.kafka.bootstrap, "--schemas", str(DOCS / "schemas"),
         "--group", f"doc-{uuid.uuid4().hex[:6]}", "--idle-exit", "30"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    mine = [p["alert_id"] for p in printed if p["camera_id"] == "cam-doc"]
    assert live.alert_id in mine and mine.count(live.alert_id) == 1  # once, despite the redelivery
    assert replayed.alert_id not in mine, "a replayed alert reached the live consumer"
    assert "skipping invalid message" in result.stderr


def test_example_consumer_speaks_sasl_ssl(monkeypatch, tmp_path):
    """What production offers: SCRAM over TLS with the cluster's CA; the password from the environment only."""
    ca = tmp_path / "ca.crt"
    ca.write_text(Path(certifi.where()).read_text())
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret")
    module = example()
    args = module.parse_args(["--bootstrap", "127.0.0.1:1", "--schemas", str(DOCS / "schemas"), "--security-protocol", "SASL_SSL",
                              "--sasl-username", "downstream-team", "--ca-file", str(ca)])
    config = module.consumer_config(args)
    assert "s3cret" not in " ".join(sys.argv)
    consumer = KafkaConsumer(**config, api_version=(2, 8))  # a given api_version: no connection at construction
    try:
        manager = consumer._client._manager
        assert manager.ssl_enabled and manager.config["sasl_mechanism"] == "SCRAM-SHA-512"
        assert (manager.config["sasl_plain_username"], manager.config["sasl_plain_password"]) == ("downstream-team", "s3cret")
        assert manager.config["ssl_cafile"] == str(ca)
    finally:
        consumer.close()


def test_published_schemas_are_current(tmp_path):
    """docs/schemas is the contract other languages read: regenerate with `vigil schemas export docs/schemas`."""
    export_json_schemas(tmp_path)
    published = {p.name: p.read_text() for p in (DOCS / "schemas").glob("*.schema.json")}
    current = {p.name: p.read_text() for p in tmp_path.glob("*.schema.json")}
    assert published == current, "docs/schemas is stale: run `vigil schemas export docs/schemas`"
