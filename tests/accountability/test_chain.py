"""The audit chain's logic (sealing, walking, filtering) on events built here: no services."""

from __future__ import annotations

from datetime import timedelta

from accountability.actors import ROLES, Actor, NotAuthorised, require, service_actor
from accountability.audit import GENESIS, AuditFilter, event_hash, request_digest, seal, walk
from runtime.kafka import ReadEvent
from schemas.events import AuditEvent, utc_now

import pytest


def request(i: int, **fields) -> AuditEvent:
    base = dict(camera_id="audit", source_ts=utc_now(), trace_id=f"t{i}", actor="alice", action="enroll", subject=f"p{i}",
                reason="case 1")
    return AuditEvent(**{**base, **fields})


def chain(n: int) -> list[AuditEvent]:
    events, prev = [], GENESIS
    for i in range(n):
        events.append(seal(request(i), i + 1, prev))
        prev = events[-1].hash
    return events


def records(events: list[AuditEvent]) -> list[ReadEvent]:
    return [ReadEvent("vigil.audit.v1", 0, offset, 0, e, None, b"") for offset, e in enumerate(events)]


def digests(events: list[AuditEvent]) -> dict[str, str]:
    return {e.event_id: request_digest(e) for e in events}


def test_a_sealed_chain_verifies_and_its_head_is_the_last_event():
    events = chain(5)
    report = walk(records(events), digests(events))
    assert report.ok and report.events == 5 and report.head == events[-1] and report.next_seq == 6
    assert [e.seq for e in events] == [1, 2, 3, 4, 5] and events[0].prev_hash == GENESIS
    assert all(e.prev_hash == p.hash for p, e in zip(events, events[1:]))


def test_a_sealed_event_round_trips_through_json_with_the_same_hash():
    event = chain(1)[0]
    again = AuditEvent.model_validate_json(event.model_dump_json())
    assert event_hash(again) == event.hash and request_digest(again) == request_digest(request(0).model_copy(
        update={"event_id": event.event_id, "produced_at": event.produced_at, "source_ts": event.source_ts}))


def test_an_altered_event_is_named_first():
    events = chain(4)
    altered = events[1].model_copy(update={"reason": "nothing to see"})  # hash left as it was
    report = walk(records([events[0], altered, *events[2:]]), digests(events))  # changed in place (in storage)
    assert report.breaks[0].offset == 1 and report.breaks[0].seq == 2 and "altered" in report.breaks[0].why
    appended = walk(records([*events, altered]), digests(events))  # appended to the topic (Kafka appends only)
    assert [b.offset for b in appended.breaks] == [4] and "altered" in appended.breaks[0].why and appended.head == events[-1]


def test_a_well_formed_forgery_is_named_by_its_missing_request():
    events = chain(3)
    forged = seal(request(99, action="remove", subject="p1"), 4, events[-1].hash)  # a valid link, but nobody asked for it
    genuine = seal(request(4), 4, events[-1].hash)  # what the sequencer sealed next
    report = walk(records([*events, forged, genuine]), digests([*events, genuine]))
    assert len(report.breaks) == 1 and report.breaks[0].offset == 3 and "written to the sealed log directly" in report.breaks[0].why
    assert report.head == genuine


def test_gaps_reorderings_duplicates_and_foreign_payloads_break_the_chain():
    events = chain(4)
    for tampered, offset, why in (
        ([events[0], events[2], events[3]], 1, "seq 3 where 2 was due"),
        ([events[0], events[1], events[3], events[2]], 2, "seq 4 where 3 was due"),
        ([events[0], request(7)], 1, "unsealed"),
    ):
        report = walk(records(tampered), None)
        assert report.breaks[0].offset == offset and why in report.breaks[0].why, report.breaks
    garbage = ReadEvent("vigil.audit.v1", 0, 0, 0, None, "1 validation error(s)", b"{}")
    assert "not an audit event" in walk([garbage], None).breaks[0].why


def test_requests_not_sealed_yet_are_counted():
    events = chain(2)
    waiting = request(5)
    assert walk(records(events), digests(events) | {waiting.event_id: request_digest(waiting)}).pending == 1


def test_filters_by_person_actor_action_deployment_and_time():
    now = utc_now()
    a = request(1, subject="bob", deployment_id="dep-1", produced_at=now)
    b = request(2, actor="carol", action="remove", produced_at=now + timedelta(hours=1))
    assert AuditFilter(person="bob")(a) and not AuditFilter(person="bob")(b)
    assert AuditFilter(actor="carol", action="remove")(b) and not AuditFilter(actor="carol")(a)
    assert AuditFilter(deployment="dep-1")(a) and not AuditFilter(deployment="dep-1")(b)
    assert AuditFilter(since=now + timedelta(minutes=30))(b) and not AuditFilter(since=now + timedelta(minutes=30))(a)
    assert AuditFilter(until=now)(a) and not AuditFilter(until=now)(b)


def test_roles_are_checked():
    require(Actor("ann", "console", frozenset({"authoriser"})), "authoriser")
    with pytest.raises(NotAuthorised, match="needs the role authoriser"):
        require(Actor("ben", "console", frozenset({"reviewer"})), "authoriser")
    with pytest.raises(NotAuthorised):
        require(service_actor("match"), *ROLES)


def test_a_newer_writers_unknown_field_is_sealed_and_checked_as_written():
    """A sequencer or verifier one release behind keeps fields it does not know: they are part of the hash."""
    raw = request(1).model_dump_json()[:-1] + ',"added_in_a_later_release":{"x":1}}'
    written = AuditEvent.model_validate_json(raw)
    sealed = seal(written, 1, GENESIS)
    assert sealed.model_dump()["added_in_a_later_release"] == {"x": 1}
    assert walk(records([sealed]), {written.event_id: request_digest(written)}).ok
    tampered = AuditEvent.model_validate_json(sealed.model_dump_json().replace('{"x":1}', '{"x":2}'))
    assert not walk(records([tampered]), {written.event_id: request_digest(written)}).ok
