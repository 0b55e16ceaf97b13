"""Enrolment against the real services: exactly one face per photo, or the photo is refused and nothing changes."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from PIL import Image

from datetime import timedelta

from schemas.events import utc_now
from storage.vectors import Watchlist
from tests.accountability_helpers import TESTER, audit_requests

pytestmark = [pytest.mark.services, pytest.mark.models]
NEXT_MONTH = utc_now() + timedelta(days=30)


@pytest.fixture
def enroller(stack, weights_dir, detector, embedder):
    from vigil.enroll import Enroller

    settings = stack.settings
    settings.models.weights_dir = weights_dir
    settings.milvus.collection = f"test_{uuid.uuid4().hex[:8]}"
    enroller = Enroller(settings, detector=detector, embedder=embedder)
    yield enroller
    enroller.close()
    Watchlist(settings.milvus).drop()


def test_refuses_no_face_and_several_faces_and_changes_nothing(enroller, face_pairs, tmp_path):
    blank = tmp_path / "wall.jpg"
    Image.fromarray(np.full((480, 640, 3), 120, np.uint8)).save(blank)
    person = f"refused-{uuid.uuid4().hex[:6]}"
    result = enroller.enroll(person, [blank, face_pairs / "couple.jpg"], actor=TESTER, reason="unit test", expires_at=NEXT_MONTH)
    assert result.enrolled == []
    assert "no face found in wall.jpg" in result.refused[str(blank)]
    assert "faces found in couple.jpg" in result.refused[str(face_pairs / "couple.jpg")]
    assert "exactly one face" in result.refused[str(face_pairs / "couple.jpg")]
    assert person not in enroller.watchlist.persons()
    assert enroller.store.list_keys(enroller.settings.s3.watchlist_bucket, f"{person}/") == []

    audit = audit_requests(enroller.settings, NEXT_MONTH - timedelta(days=31), subject=person)
    assert sorted(a.action for a in audit) == ["enroll_refused", "enroll_refused"]
    assert all(a.actor == TESTER.name and a.reason == "unit test" for a in audit)


def test_enrolls_good_photos_beside_a_refused_one_with_audit(enroller, face_pairs, identities, tmp_path):
    unreadable = tmp_path / "broken.jpg"
    unreadable.write_bytes(b"\xff\xd8 definitely not a jpeg")
    person = f"person-{uuid.uuid4().hex[:6]}"
    photos = [face_pairs / name for name in identities["person-01"][:2]] + [unreadable]
    result = enroller.enroll(person, photos, actor=TESTER, reason="case 42", expires_at=NEXT_MONTH)
    assert len(result.enrolled) == 2 and "cannot read image" in result.refused[str(unreadable)]
    assert enroller.watchlist.persons()[person] == 2
    assert len(enroller.store.list_keys(enroller.settings.s3.watchlist_bucket, f"{person}/")) == 2
    audit = audit_requests(enroller.settings, NEXT_MONTH - timedelta(days=31), subject=person)
    enrolled = [a for a in audit if a.action == "enroll"]
    assert len(enrolled) == 1 and enrolled[0].reason == "case 42" and len(enrolled[0].details["photos"]) == 2
    assert enrolled[0].details["sources"] == [f"photo file {p.name}" for p in photos[:2]]
    assert {e.expires_at for e in enroller.watchlist.entries(person_id=person)} == {int(NEXT_MONTH.timestamp() * 1000)}


def test_a_reason_is_required(enroller, face_pairs):
    from vigil.enroll import EnrollmentError

    with pytest.raises(EnrollmentError, match="reason"):
        enroller.enroll("someone", [face_pairs / "img1.jpg"], actor=TESTER, reason="  ", expires_at=NEXT_MONTH)


def _resaved(src, dst):
    """The re-saved copy (70 % size, JPEG q70) that enroll.duplicate_similarity was measured on (bench.templates)."""
    from bench.templates import resaved
    from vigil.enroll import load_photo

    Image.fromarray(resaved(load_photo(src))).save(dst)  # lossless: exactly the measured copy
    return dst


def test_refuses_near_duplicates_in_a_request_already_enrolled_and_under_another_name(enroller, face_pairs, identities, tmp_path):
    first, second = (face_pairs / name for name in identities["person-02"][:2])
    copy = _resaved(first, tmp_path / "copy-of-first.png")
    person = f"person-{uuid.uuid4().hex[:6]}"

    result = enroller.enroll(person, [first, copy, second], actor=TESTER, reason="case 7", expires_at=NEXT_MONTH)
    assert result.enrolled == [str(first), str(second)]  # a different photo of the same person is welcome
    assert f"near-duplicate of {first.name} in this request" in result.refused[str(copy)]
    assert enroller.watchlist.persons()[person] == 2

    again = enroller.enroll(person, [copy], actor=TESTER, reason="case 7", expires_at=NEXT_MONTH)
    assert again.enrolled == [] and "already enrolled for this person" in again.refused[str(copy)]
    other = f"other-{uuid.uuid4().hex[:6]}"
    renamed = enroller.enroll(other, [copy], actor=TESTER, reason="case 8", expires_at=NEXT_MONTH)
    assert renamed.enrolled == [] and f"already enrolled for {person!r}" in renamed.refused[str(copy)]
    assert enroller.watchlist.persons()[person] == 2 and other not in enroller.watchlist.persons()
    assert enroller.store.list_keys(enroller.settings.s3.watchlist_bucket, f"{other}/") == []


def test_refuses_a_face_that_fails_the_quality_gate(enroller, face_pairs, identities, tmp_path):
    from PIL import ImageFilter

    sharp = face_pairs / identities["person-03"][0]
    blurred = tmp_path / "blurred.jpg"
    with Image.open(sharp) as img:
        img.convert("RGB").filter(ImageFilter.GaussianBlur(6)).save(blurred, quality=95)
    person = f"person-{uuid.uuid4().hex[:6]}"
    result = enroller.enroll(person, [blurred], actor=TESTER, reason="case 9", expires_at=NEXT_MONTH)
    assert result.enrolled == []
    assert "fails the quality gate (blurry" in result.refused[str(blurred)]
    assert person not in enroller.watchlist.persons()


def test_an_enroller_enrols_and_an_authoriser_only_by_approving_someone_elses_proposal(enroller, people):
    from accountability.actors import Actor, NotAuthorised

    authoriser = Actor("ada", "console", frozenset({"authoriser"}))
    clerk = Actor("bob", "console", frozenset({"enroller"}))
    photo = people["person-03"][:1]
    for actor, approval in ((authoriser, None), (clerk, {"proposal_id": "p1", "proposed_by": "carol"})):
        with pytest.raises(NotAuthorised):
            enroller.enroll("person-03", photo, actor=actor, reason="case 3", expires_at=NEXT_MONTH, approval=approval)
    assert "person-03" not in enroller.watchlist.persons()
