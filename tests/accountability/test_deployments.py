"""Deployments: the rule that covers an event (pure logic), and starting, ending and seeing them across processes."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from accountability.actors import Actor, NotAuthorised
from accountability.deployments import (
    DeploymentError, DeploymentRequest, DeploymentTable, Deployments, covers, persons_of, watchlist_digest,
)
from schemas.events import DeploymentEvent, utc_now
from storage.vectors import Entry
from tests.accountability_helpers import TESTER, audit_requests

T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def deployment(**fields) -> DeploymentEvent:
    base = dict(camera_id="deployments", source_ts=T0, trace_id="t", deployment_id="dep-1", case="c", purpose="p",
                authorised_by="ann", kind="live", cameras=["lobby"], starts_at=T0, ends_at=T0 + timedelta(hours=1),
                watchlist_digest="0" * 64)
    return DeploymentEvent(**{**base, **fields})


def test_a_deployment_covers_its_cameras_window_and_runs_only():
    live, bound = deployment(), deployment(run_ids=["run-1"])
    inside = T0 + timedelta(minutes=5)
    assert covers(live, "lobby", inside, None)
    assert not covers(live, "gate", inside, None)  # another camera
    assert not covers(live, "lobby", T0 - timedelta(seconds=1), None) and not covers(live, "lobby", T0 + timedelta(hours=1), None)
    assert not covers(live, "lobby", inside, "run-1")  # a run's events need a deployment bound to that run
    assert covers(bound, "lobby", inside, "run-1") and not covers(bound, "lobby", inside, None)
    assert not covers(bound, "lobby", inside, "run-2")
    assert not covers(deployment(ended_at=T0), "lobby", inside, None)  # ended: covers nothing any more


def test_persons_and_the_watchlist_digest():
    assert persons_of([deployment(persons=["b"]), deployment(persons=["a"])]) == ["a", "b"]
    assert persons_of([deployment(persons=["b"]), deployment()]) is None
    later = int((utc_now() + timedelta(days=1)).timestamp() * 1000)
    entries = [Entry(1, "a", "a/1.jpg", "", "ann", "r", 0, later), Entry(2, "b", "b/1.jpg", "", "ann", "r", 0, later),
               Entry(3, "c", "c/1.jpg", "", "ann", "r", 0, 1000)]  # c expired long ago
    everyone, count = watchlist_digest(entries, None)
    assert count == 2 and watchlist_digest(entries[:2], None) == (everyone, 2)
    assert watchlist_digest(entries, ["a"])[1] == 1 and watchlist_digest(entries, ["a"])[0] != everyone


@pytest.mark.services
def test_start_and_end_reach_a_running_table_within_a_second_and_are_audited(stack):
    settings = stack.settings
    table = DeploymentTable(settings).start()
    try:
        with Deployments(settings) as deployments:
            began = utc_now()
            started = deployments.start(TESTER, DeploymentRequest(case="C-7", purpose="test", cameras=["cam-7"],
                                                                  ends_at=utc_now() + timedelta(hours=1), persons=["p-7"]))
            seen_at = time.monotonic()
            while not table.covering("cam-7", utc_now(), None):
                assert time.monotonic() - seen_at < 5, "the table did not see the start"
                time.sleep(0.05)
            start_lag = time.monotonic() - seen_at
            assert [d.deployment_id for d in table.covering("cam-7", utc_now(), None)] == [started.deployment_id]
            assert started.deployment_id in [d.deployment_id for d in deployments.list(active_at=utc_now())]
            deployments.end(TESTER, started.deployment_id, "test over")
            while table.covering("cam-7", utc_now(), None):
                assert time.monotonic() - seen_at < 10, "the table did not see the end"
                time.sleep(0.05)
            assert started.deployment_id not in [d.deployment_id for d in deployments.list(active_at=utc_now())]
            ended = deployments.get(started.deployment_id)
            assert ended.ended_by == TESTER.name and ended.end_reason == "test over"
    finally:
        table.stop()
    events = audit_requests(settings, began, deployment_id=started.deployment_id)
    assert [e.action for e in events] == ["deployment_start", "deployment_end"]
    assert events[0].details["persons"] == ["p-7"] and events[0].details["watchlist_digest"] == started.watchlist_digest
    print(f"a started deployment reached a running table in {start_lag:.2f} s")


@pytest.mark.services
def test_deployments_that_cannot_be_authorised_are_refused_before_anything_is_written(stack):
    settings = stack.settings
    now = utc_now()
    with Deployments(settings) as deployments:
        for request, why in (
            (DeploymentRequest("c", "p", [], now + timedelta(hours=1)), "named cameras"),
            (DeploymentRequest("c", "p", ["x"], now - timedelta(hours=1), starts_at=now - timedelta(hours=2)),
             "must end in the future"),
            (DeploymentRequest("c", "p", ["x"], now - timedelta(hours=1), starts_at=now - timedelta(hours=2),
                               kind="retrospective"), "name the persons"),
            (DeploymentRequest("c", "p", ["x"], now + timedelta(hours=1), starts_at=now - timedelta(hours=2),
                               kind="retrospective", persons=["a"]), "window must end in the past"),
            (DeploymentRequest(" ", "p", ["x"], now + timedelta(hours=1)), "case"),
        ):
            with pytest.raises(DeploymentError, match=why):
                deployments.start(TESTER, request)
        with pytest.raises(NotAuthorised):
            deployments.start(Actor("rev", "console", frozenset({"reviewer"})), DeploymentRequest("c", "p", ["x"], now + timedelta(hours=1)))
    assert audit_requests(settings, now, action="deployment_start", actor="rev") == []
