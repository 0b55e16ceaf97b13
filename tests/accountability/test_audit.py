"""The audit log against a real broker, S3 server and Milvus: fail closed, sealed, verified, tamper-evident."""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from accountability.audit import AuditLog, AuditUnavailable, seal, verify
from runtime.kafka import EventProducer
from schemas.topics import AUDIT
from storage.objects import ObjectStore
from tests.accountability.conftest import pid_listening
from tests.accountability_helpers import TESTER, sequencer, settings_env, wait_sealed
from vigil.cli import main

pytestmark = pytest.mark.services


def test_verify_passes_on_a_real_log_and_names_a_forged_or_altered_event(own_settings, tmp_path, monkeypatch, capsys):
    settings = own_settings
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    with sequencer(settings, tmp_path, VIGIL_AUDIT__ANCHOR_INTERVAL_S="1"):
        with AuditLog(settings) as audit:
            written = [audit.append(TESTER, "view", f"topic-{i}", "audit test", {"i": i}) for i in range(3)]
            log = wait_sealed(settings, {e.event_id for e in written})
            assert [e.seq for e in log] == [1, 2, 3] and [e.event_id for e in log] == [e.event_id for e in written]
            assert main(["audit", "verify"]) == 0 and "chain intact" in capsys.readouterr().out

            # A forger with write access to the sealed topic: a well-formed next link, then an altered copy of seq 2.
            forged = seal(written[0].model_copy(update={"event_id": uuid.uuid4().hex, "action": "remove", "subject": "nobody"}),
                          4, log[-1].hash)
            altered = log[1].model_copy(update={"reason": "nothing happened"})
            producer = EventProducer(settings.kafka)
            producer.send(AUDIT, forged)
            producer.send(AUDIT, altered)
            producer.flush()
            producer.close()
            report = verify(settings)
            assert [b.event_id for b in report.breaks] == [forged.event_id, altered.event_id]
            assert "written to the sealed log directly" in report.breaks[0].why and "altered" in report.breaks[1].why
            assert main(["audit", "verify"]) == 1
            out = capsys.readouterr().out
            assert f"CHAIN BROKEN at offset 3 (seq 4, event {forged.event_id})" in out

            # The sequencer goes on from the genuine head: the next real event verifies.
            later = audit.append(TESTER, "view", "topic-later", "audit test")
            log = wait_sealed(settings, {later.event_id})
            assert log[-1].event_id == later.event_id and log[-1].seq == 4 and log[-1].prev_hash == log[2].hash
    report = verify(settings)
    assert report.events == 4 and report.head.event_id == later.event_id and len(report.breaks) == 2
    assert report.anchors >= 1  # the sequencer anchored its head (under Object Lock) at least when it stopped
    store = ObjectStore(settings.s3)
    (key, version), *_ = store.versions(settings.audit.anchor_bucket, "anchors/")
    with pytest.raises(Exception, match="AccessDenied"):  # COMPLIANCE: not even the owner deletes a locked version
        store.client.remove_object(settings.audit.anchor_bucket, key, version_id=version)


def test_with_the_broker_paused_enroll_fails_and_writes_nothing(own_settings, detector, embedder, face_pairs, identities):
    from vigil.enroll import Enroller

    settings = own_settings
    enroller = Enroller(settings, detector=detector, embedder=embedder)  # buckets and collection exist before the pause
    person = f"person-{uuid.uuid4().hex[:6]}"
    photos = [face_pairs / name for name in identities["person-01"][:2]]
    broker = pid_listening(int(settings.kafka.bootstrap.rsplit(":", 1)[1]))
    os.kill(broker, signal.SIGSTOP)
    try:
        with pytest.raises(AuditUnavailable, match="not written, so not done"):
            enroller.enroll(person, photos, actor=TESTER, reason="broker paused", expires_at=_in_days(30))
        assert enroller.watchlist.persons() == {}
        assert enroller.store.list_keys(settings.s3.watchlist_bucket) == []
        with pytest.raises(AuditUnavailable):
            Enroller(settings, detector=detector, embedder=embedder)
    finally:
        os.kill(broker, signal.SIGCONT)
    try:
        assert enroller.watchlist.persons() == {} and enroller.store.list_keys(settings.s3.watchlist_bucket) == []
    finally:
        enroller.close()


def _in_days(days: float):
    from datetime import timedelta

    from schemas.events import utc_now

    return utc_now() + timedelta(days=days)
