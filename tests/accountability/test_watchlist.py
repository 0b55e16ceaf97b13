"""Expiry and erasure against the real Milvus, S3 server and broker, with the real detector and embedder."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from accountability.actors import service_actor
from accountability.audit import AuditLog
from accountability.retention import Housekeeper
from schemas.events import utc_now
from tests.accountability.conftest import isolated
from tests.accountability_helpers import TESTER, audit_requests, settings_env
from tests.conftest import load_rgb
from vigil.cli import main

pytestmark = [pytest.mark.services, pytest.mark.models]


@pytest.fixture
def enroller(stack, weights_dir, detector, embedder):
    from vigil.enroll import Enroller

    settings = isolated(stack.settings)
    settings.models.weights_dir = weights_dir
    enroller = Enroller(settings, detector=detector, embedder=embedder)
    yield enroller
    enroller.watchlist.drop()
    enroller.close()


def probe(detector, embedder, photo):
    return embedder.embed([detector.detect([load_rgb(photo, max_side=960)])[0][0].crop])


def test_an_enrolment_without_a_valid_expiry_is_refused_and_changes_nothing(enroller, face_pairs, identities, capsys):
    from vigil.enroll import EnrollmentError

    person = f"person-{uuid.uuid4().hex[:6]}"
    photos = [face_pairs / identities["person-01"][0]]
    since = utc_now()
    for expires_at, why in ((None, "an expiry is required"), (utc_now() - timedelta(minutes=1), "has passed"),
                            (utc_now() + timedelta(days=enroller.settings.enroll.max_expiry_days + 1), "max_expiry_days")):
        with pytest.raises(EnrollmentError, match=why):
            enroller.enroll(person, photos, actor=TESTER, reason="test", expires_at=expires_at)
    assert enroller.watchlist.persons() == {} and enroller.store.list_keys(enroller.settings.s3.watchlist_bucket) == []
    assert audit_requests(enroller.settings, since, subject=person) == []
    with pytest.raises(SystemExit):  # the command line asks for it before anything happens
        main(["enroll", person, str(photos[0]), "--reason", "test"])
    assert "--expires" in capsys.readouterr().err


def test_an_expired_entry_never_matches_then_is_purged_with_its_photo(enroller, face_pairs, identities, detector, embedder):
    settings = enroller.settings
    person = f"person-{uuid.uuid4().hex[:6]}"
    photos = identities["person-02"]
    result = enroller.enroll(person, [face_pairs / photos[0]], actor=TESTER, reason="short expiry",
                             expires_at=utc_now() + timedelta(seconds=4), source="test photo, face-pairs")
    assert len(result.enrolled) == 1
    (entry,) = enroller.watchlist.entries(person_id=person)
    assert entry.source == "test photo, face-pairs" and entry.enrolled_by == TESTER.name
    seen = probe(detector, embedder, face_pairs / photos[1])
    assert [h.person_id for h in enroller.watchlist.search(seen)[0]] == [person]
    time.sleep(max(0.0, entry.expires_at / 1000 - time.time()) + 0.5)
    assert enroller.watchlist.search(seen)[0] == []  # filtered at search time, before any sweep
    assert enroller.watchlist.entries(person_id=person) == [entry]  # still stored until the sweep

    since = utc_now()
    with AuditLog(settings) as audit:
        counts = Housekeeper(settings, service_actor("test"), audit=audit, store=enroller.store,
                             watchlist=enroller.watchlist).sweep()
    assert counts["expired_entries"] == 1
    assert enroller.watchlist.entries(person_id=person) == [] and person not in enroller.watchlist.persons()
    assert enroller.store.list_keys(settings.s3.watchlist_bucket, f"{person}/") == []
    (expired,) = audit_requests(settings, since, subject=person)
    assert expired.action == "expire" and expired.details["entries"] == 1 and expired.details["photos"] == [entry.photo_key]


def test_remove_erases_vectors_and_photos_with_an_audit_event(enroller, face_pairs, identities, detector, embedder, monkeypatch,
                                                              capsys):
    settings = enroller.settings
    person = f"person-{uuid.uuid4().hex[:6]}"
    photos = [face_pairs / name for name in identities["person-03"][:2]]
    assert len(enroller.enroll(person, photos, actor=TESTER, reason="to be removed",
                               expires_at=utc_now() + timedelta(days=30)).enrolled) == 2
    keys = enroller.store.list_keys(settings.s3.watchlist_bucket, f"{person}/")
    ids = [e.id for e in enroller.watchlist.entries(person_id=person)]
    assert len(keys) == 2 and len(ids) == 2

    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    since = utc_now()
    assert main(["remove", person, "--reason", "request of the data subject"]) == 0
    assert "removed 2 watchlist entries and 2 photo(s)" in capsys.readouterr().out
    seen = probe(detector, embedder, face_pairs / identities["person-03"][2])
    assert all(h.person_id != person for h in enroller.watchlist.search(seen, limit=10)[0])  # Strong consistency
    assert enroller.watchlist.entries(person_id=person) == [] and enroller.store.list_keys(settings.s3.watchlist_bucket) == []
    (removed,) = audit_requests(settings, since, subject=person)
    assert removed.action == "remove" and removed.reason == "request of the data subject"
    assert sorted(removed.details["entry_ids"]) == sorted(ids) and sorted(removed.details["photos"]) == sorted(keys)
    assert main(["remove", person, "--reason", "again"]) == 2  # nothing left to remove: an error, and no event
    assert "has no watchlist entry" in capsys.readouterr().err
    assert len(audit_requests(settings, since, subject=person)) == 1
