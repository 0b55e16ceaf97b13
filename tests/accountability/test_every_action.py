"""Every audit action has an emitter, and each audited command leaves exactly one audit event (table-driven)."""

from __future__ import annotations

import importlib
import inspect
import re
import time
import typing
import uuid
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image

from schemas.events import AuditEvent

# Where each action is emitted: the modules whose code appends it. The console's (review, user, proposal) are tested in tests/console.
EMITTERS = {
    "enroll": ["vigil.enroll"],
    "enroll_refused": ["vigil.enroll"],
    "remove": ["accountability.watchlist"],
    "expire": ["accountability.watchlist"],
    "search": ["vigil.replay"],
    "view": ["vigil.replay", "console.routes"],
    "retention_delete": ["accountability.retention"],
    "deployment_start": ["accountability.deployments"],
    "deployment_end": ["accountability.deployments"],
    "export": ["vigil.export", "vigil.report"],
    "review": ["console.reviews"],
    "user": ["console.routes"],
    "proposal": ["console.routes"],
}


def test_every_action_in_the_schema_has_an_emitter():
    actions = set(typing.get_args(AuditEvent.model_fields["action"].annotation))
    assert set(EMITTERS) == actions
    for action, modules in EMITTERS.items():
        for module in modules:
            source = inspect.getsource(importlib.import_module(module))
            assert re.search(rf'(append|audit)\([^"\n]*"{action}"', source), f"{module} does not emit {action}"


@pytest.mark.services
@pytest.mark.models
@pytest.mark.slow
def test_each_audited_command_leaves_exactly_one_audit_event(own_settings, face_pairs, identities, tmp_path, monkeypatch):
    from accountability.actors import cli_actor
    from accountability.audit import AuditLog
    from ingest.archive import FootageArchive
    from match.decision import alert_id
    from runtime.imaging import encode_jpeg
    from runtime.kafka import EventProducer
    from schemas.events import AlertEvent, Box, utc_now
    from schemas.topics import ALERTS, FACES
    from storage.objects import ObjectStore, evidence_key
    from synthetic.footage import make_pattern_clip
    from tests.accountability_helpers import TESTER, audit_requests, deploy, settings_env
    from vigil.cli import main
    from vigil.enroll import Enroller

    settings = own_settings
    operator = cli_actor().name
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VIGIL_MODELS__WEIGHTS_DIR", str(settings.models.weights_dir))
    monkeypatch.setenv("VIGIL_STAGE__HEALTH_PORT", "0")
    store = ObjectStore(settings.s3)
    person, photo = f"person-{uuid.uuid4().hex[:6]}", face_pairs / identities["person-01"][0]
    wall = tmp_path / "wall.jpg"
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(wall)

    # What some commands act on: an alert with its evidence, recorded footage, an entry about to expire.
    ident = alert_id(uuid.uuid4().hex, person)
    image = np.asarray(Image.open(photo).convert("RGB"))
    evidence = {kind: evidence_key("alerts", "cam-t", utc_now(), f"{ident}-{kind}.jpg") for kind in ("snapshot", "crop")}
    for key in evidence.values():
        store.put_bytes(settings.s3.evidence_bucket, key, encode_jpeg(image, 90), "image/jpeg")
    producer = EventProducer(settings.kafka)
    producer.send(ALERTS, AlertEvent(event_id=ident, alert_id=ident, camera_id="cam-t", source_ts=utc_now(), trace_id="t",
                                     person_id=person, score=0.9, threshold=0.5, face_event_id="f", box=Box(x1=0, y1=0, x2=9, y2=9),
                                     snapshot_key=evidence["snapshot"], crop_key=evidence["crop"], model="m"))
    producer.close()
    t1 = utc_now() - timedelta(hours=1)
    clip = make_pattern_clip(tmp_path / "clip.mp4", n_frames=10, fps=10, size=(160, 120))
    FootageArchive(store).put("cam-t", t1, t1 + timedelta(seconds=1), clip, frames=10)
    search = deploy(settings, ["cam-t"], kind="retrospective", persons=[person], starts_at=t1, ends_at=t1 + timedelta(minutes=5))
    live = deploy(settings, ["cam-t"])
    since_faces = utc_now().isoformat()

    def expiring():
        with AuditLog(settings) as audit:
            enroller = Enroller(settings, audit=audit)
            enroller.enroll(f"{person}-x", [face_pairs / identities["person-02"][0]], actor=TESTER, reason="expires",
                            expires_at=utc_now() + timedelta(seconds=2))
            enroller.close()
        time.sleep(2.5)

    def stale_transient():
        store.put_bytes(settings.s3.evidence_bucket, "transient/cam-t/2026/01/01/00/old.jpg", b"\xff\xd8", "image/jpeg")
        monkeypatch.setenv("VIGIL_RETENTION__TRANSIENT_MAX_AGE_S", "0.001")

    rows = [  # (what to prepare, the command, the one action it leaves)
        (None, ["enroll", person, str(photo), "--reason", "case 1", "--expires", "30d", "--source", "custody photo"], "enroll"),
        (None, ["enroll", f"{person}-z", str(wall), "--reason", "case 1", "--expires", "30d"], "enroll_refused"),
        (None, ["deployment", "start", "--case", "c-2", "--purpose", "p", "--cameras", "cam-u", "--until", "2h"], "deployment_start"),
        (None, ["deployment", "end", live.deployment_id, "--reason", "done"], "deployment_end"),
        (None, ["replay", "--topic", FACES.name, "--since", since_faces, "--reason", "audit test", "--idle-exit", "1"], "view"),
        (None, ["alerts", "--from-beginning", "--idle-exit", "1"], "view"),
        (None, ["export", ident, "--reason", "court", "--out", str(tmp_path / "export")], "export"),
        (None, ["replay", "--camera", "cam-t", "--from", t1.isoformat(), "--to", (t1 + timedelta(seconds=1)).isoformat(),
                "--deployment", search.deployment_id, "--reason", "who was there"], "search"),
        (None, ["remove", person, "--reason", "no longer needed"], "remove"),
        (stale_transient, ["housekeep"], "retention_delete"),
        (expiring, ["housekeep"], "expire"),
    ]
    for prepare, command, action in rows:
        if prepare:
            prepare()
        since = utc_now()
        assert main(command) in (0, 2 if action == "enroll_refused" else 0), command
        left = audit_requests(settings, since)
        assert [e.action for e in left] == [action], (command, [(e.action, e.subject) for e in left])
        assert left[0].actor == ("service:housekeep" if command == ["housekeep"] else operator)  # the login, not a typed name
