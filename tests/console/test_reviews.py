"""The two-person rule as a fold over decisions, in any interleaving with the alerts, redeliveries included."""

from __future__ import annotations

import pytest

from console.reviews import ReviewBook, confirmed_event
from schemas.events import AlertEvent, Box, ReviewDecisionEvent, utc_now


def alert(alert_id: str = "a1") -> AlertEvent:
    return AlertEvent(camera_id="cam", source_ts=utc_now(), trace_id="t", alert_id=alert_id, person_id="p", score=0.8,
                      threshold=0.5, face_event_id="f", box=Box(x1=0, y1=0, x2=1, y2=1), snapshot_key="s", crop_key="c", model="m")


def decision(reviewer: str, kind: str = "confirm", alert_id: str = "a1") -> ReviewDecisionEvent:
    return ReviewDecisionEvent(camera_id="cam", source_ts=utc_now(), trace_id="t", alert_id=alert_id, person_id="p",
                               decision=kind, reviewer=reviewer)


def test_two_different_reviewers_confirm():
    book = ReviewBook(2)
    book.add_alert(alert())
    first = decision("ann")
    assert book.apply(first) and book.reviews["a1"].status == "open"
    assert not book.apply(first)  # redelivered: nothing changes
    assert not book.apply(decision("ann"))  # the same reviewer again: not a second confirmation
    assert book.refusal("a1", "ann").status == 409 and book.refusal("a1", "bob") is None
    assert book.apply(decision("bob")) and book.reviews["a1"].status == "confirmed"
    assert book.refusal("a1", "cid").status == 409
    assert not book.apply(decision("cid", "reject"))  # closed: a late rejection changes nothing
    event = confirmed_event(book.reviews["a1"])
    assert event.confirmed_by == ["ann", "bob"] and event.event_id == "a1-confirmed" and event.camera_id == "cam"
    assert book.unpublished() == [book.reviews["a1"]]
    book.mark_published("a1")
    assert book.unpublished() == []


def test_one_rejection_closes_even_after_a_confirmation():
    book = ReviewBook(2)
    book.add_alert(alert())
    book.apply(decision("ann"))
    book.apply(decision("bob", "reject"))
    assert book.reviews["a1"].status == "rejected" and book.reviews["a1"].rejection.reviewer == "bob"
    assert not book.apply(decision("cid"))
    assert book.unpublished() == []


def test_decisions_read_before_their_alert_count_and_unknown_alerts_are_404():
    book = ReviewBook(3)
    for reviewer in ("ann", "bob"):
        book.apply(decision(reviewer))
    assert book.refusal("a1", "cid").status == 404  # the alert itself not read yet
    book.add_alert(alert())
    assert book.reviews["a1"].status == "open" and book.reviews["a1"].confirmed_by == ["ann", "bob"]
    book.apply(decision("cid"))
    assert book.reviews["a1"].status == "confirmed"
    assert book.refusal("nope", "ann").status == 404


def test_fewer_than_two_confirmations_is_refused():
    with pytest.raises(ValueError):
        ReviewBook(1)
