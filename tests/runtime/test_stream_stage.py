"""A real stage process over the real broker: bad events are dead-lettered, good ones flow, SIGTERM is graceful."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from runtime.imaging import encode_jpeg
from runtime.kafka import EventProducer, EventReader
from schemas.events import EmbeddingEvent, FaceEvent, utc_now
from schemas.topics import DEAD_LETTERS, EMBEDDINGS, FACES
from tests.conftest import load_rgb
from tests.kafka_helpers import send_raw

pytestmark = [pytest.mark.services, pytest.mark.models]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_embed_stage_process(stack, weights_dir, detector, face_pairs, tmp_path):
    settings = stack.settings
    port = free_port()
    env = dict(os.environ, VIGIL_STAGE__HEALTH_PORT=str(port), VIGIL_MODELS__WEIGHTS_DIR=str(weights_dir), VIGIL_STAGE__LOG_FORMAT="json")
    log = open(tmp_path / "embed.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "vigil.cli", "stage", "embed"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 120, "the stage to be ready")
        assert get(port, "/healthz")[0] == 200

        camera = f"cam-{uuid.uuid4().hex[:6]}"
        crop = detector.detect([load_rgb(face_pairs / "img1.jpg", max_side=960)])[0][0].crop

        def face(crop_jpeg: bytes) -> FaceEvent:
            return FaceEvent(
                camera_id=camera, source_ts=utc_now(), trace_id="t", frame_event_id=uuid.uuid4().hex, face_index=0,
                box={"x1": 1, "y1": 1, "x2": 90, "y2": 110}, landmarks=[(0.0, 0.0)] * 5, det_prob=0.99, crop_jpeg=crop_jpeg,
                crop_key="transient/c.jpg", snapshot_key="transient/s.jpg", frame_width=640, frame_height=480,
            )

        good, bad_crop = face(encode_jpeg(crop, 95)), face(b"garbage, not a jpeg")
        producer = EventProducer(settings.kafka)
        producer.send(FACES, bad_crop)
        producer.flush()
        send_raw(settings.kafka, FACES.name, b'{"event_type": "face", "oops": true}', key=camera.encode())
        producer.send(FACES, good)
        producer.close()

        with EventReader(settings.kafka, EMBEDDINGS) as reader:
            out = wait_for(lambda: [r.event for r in reader.read() if isinstance(r.event, EmbeddingEvent) and r.event.camera_id == camera], 60, "the embedding")
        assert [e.face_event_id for e in out] == [good.event_id]

        with EventReader(settings.kafka, DEAD_LETTERS) as reader:
            letters = []
            wait_for(lambda: letters.extend(r.event for r in reader.read() if r.event and r.event.camera_id == camera) or len(letters) >= 2, 30, "two dead letters")
        reasons = sorted(letter.error for letter in letters)
        assert any("undecodable crop" in r for r in reasons), reasons
        assert any(r.startswith("malformed FaceEvent") for r in reasons), reasons
        assert {letter.stage for letter in letters} == {"embed"}
        assert any(letter.payload == b'{"event_type": "face", "oops": true}' for letter in letters)  # the original bytes, kept

        status, metrics = get(port, "/metrics")
        assert status == 200 and 'vigil_dead_letters_total{reason="malformed",stage="embed"}' in metrics
        assert get(port, "/readyz")[0] == 200  # still serving after the bad events
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        log.close()
    assert code == 0, (tmp_path / "embed.log").read_text()[-3000:]
