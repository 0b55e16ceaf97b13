"""A console served on loopback against the session's real broker, S3 server and Milvus, with one user per role.

``console`` yields a ``Console``: its URL, its context, ``login(name)`` (an httpx
client holding the session cookie and sending the CSRF token) and
``raise_alert(person)`` (an AlertEvent on the alerts topic, with JPEG evidence
in S3 and an enrolled photo, as match and enrolment leave them).
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw

from console.users import Role, UserStore
from runtime.kafka import EventProducer
from runtime.settings import VigilSettings
from schemas.events import AlertEvent, Box, utc_now
from schemas.topics import ALERTS
from storage.objects import ObjectStore, evidence_key

PASSWORD = "correct horse battery"
USERS = {
    "admin": [Role.admin],
    "authoriser": [Role.authoriser],
    "enroller": [Role.enroller],
    "reviewer-a": [Role.reviewer],
    "reviewer-b": [Role.reviewer],
    "auditor": [Role.auditor],
}


def jpeg(text: str, size=(160, 160)) -> bytes:
    image = Image.new("RGB", size, (90, 110, 140))
    ImageDraw.Draw(image).text((8, 8), text, fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


@dataclass
class Console:
    url: str
    ctx: object
    settings: VigilSettings

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def login(self, name: str, password: str = PASSWORD) -> httpx.Client:
        client = self.client()
        response = client.post("/api/login", json={"name": name, "password": password})
        assert response.status_code == 200, response.text
        client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
        return client

    def raise_alert(self, person: str | None = None, camera: str = "cam-test") -> AlertEvent:
        """An alert as match publishes it, evidence and an enrolled photo in S3; returns once the console lists it."""
        person = person or f"person-{uuid.uuid4().hex[:6]}"
        s3, store = self.settings.s3, ObjectStore(self.settings.s3)
        store.ensure_buckets()
        now = utc_now()
        alert_id = uuid.uuid4().hex
        crop, snapshot = (evidence_key("alerts", camera, now, f"{alert_id}-{kind}.jpg") for kind in ("crop", "snapshot"))
        store.put_bytes(s3.evidence_bucket, crop, jpeg(f"crop {person}"), "image/jpeg")
        store.put_bytes(s3.evidence_bucket, snapshot, jpeg(f"frame {person}", (320, 180)), "image/jpeg")
        store.put_bytes(s3.watchlist_bucket, f"{person}/enrolled.jpg", jpeg(f"enrolled {person}"), "image/jpeg")
        alert = AlertEvent(camera_id=camera, source_ts=now, trace_id=uuid.uuid4().hex, alert_id=alert_id, person_id=person,
                           score=0.71, threshold=0.5, face_event_id=f"{alert_id}-face", box=Box(x1=1, y1=2, x2=50, y2=60),
                           snapshot_key=snapshot, crop_key=crop, model="test", track_id=f"track-{alert_id[:8]}",
                           track_score=0.7, track_faces=4)
        producer = EventProducer(self.settings.kafka)
        producer.send(ALERTS, alert).get(timeout=15)
        producer.close()
        wait_for(lambda: alert_id in self.ctx.desk.book.reviews, 30, f"the console never read alert {alert_id}")
        return alert


def wait_for(predicate, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(message)
        time.sleep(0.2)


def console_settings(stack, state_dir: Path, **console) -> VigilSettings:
    settings = stack.settings
    settings.console.state_dir = state_dir
    for key, value in console.items():
        setattr(settings.console, key, value)
    return settings


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("console")
    store = UserStore(path / "users.json")
    for name, roles in USERS.items():
        store.add(name, roles, PASSWORD)
    return path


@pytest.fixture(scope="session")
def console(stack, state_dir):
    from console.app import running

    settings = console_settings(stack, state_dir)
    with running(settings) as (url, ctx):
        yield Console(url, ctx, settings)
