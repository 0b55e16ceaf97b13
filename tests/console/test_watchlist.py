"""Watchlist, deployments and audit through the console, on the same accountability code as the CLI, against the real services."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from accountability.audit import AuditFilter, show, verify
from console.models import AuditCheck
from console.users import Role
from schemas.events import utc_now
from storage.objects import ObjectStore
from storage.vectors import Watchlist
from tests.console.conftest import PASSWORD
from tests.console.test_api import audit_events

pytestmark = pytest.mark.services


@pytest.mark.models
def test_a_proposal_matches_only_after_another_authoriser_approves_it(console, people, weights_dir):
    console.ctx.users.add("enroller-authoriser", [Role.enroller, Role.authoriser], PASSWORD)
    proposer, authoriser = console.login("enroller-authoriser"), console.login("authoriser")
    photos = [{"data": base64.b64encode(p.read_bytes()).decode()} for p in people["person-02"][:2]]
    proposed = proposer.post("/api/watchlist/proposals", json={"person_id": "person-02", "reason": "case 17 suspect",
                                                               "source": "case file 17", "expires": "7d", "photos": photos})
    assert proposed.status_code == 201, proposed.text
    proposal = proposed.json()
    assert proposal["status"] == "pending" and len(proposal["photos"]) == 2
    with Watchlist(console.settings.milvus) as watchlist:  # nothing can match yet
        watchlist.ensure_collection()
        assert not watchlist.entries(person_id="person-02")
    assert console.login("enroller").get(proposal["photos"][0]).status_code == 403  # photos for authorisers only
    assert authoriser.get(proposal["photos"][0]).status_code == 200

    url = f"/api/watchlist/proposals/{proposal['proposal_id']}/decision"
    own = proposer.post(url, json={"decision": "approve"})
    assert own.status_code == 403 and "own proposal" in own.json()["detail"]
    approved = authoriser.post(url, json={"decision": "approve", "note": "checked against the case file"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and approved.json()["enrolled"] == 2 and approved.json()["photos"] == []
    assert authoriser.post(url, json={"decision": "reject"}).status_code == 409  # decided once
    assert authoriser.get(proposal["photos"][0]).status_code == 404  # the proposal keeps no face

    with Watchlist(console.settings.milvus) as watchlist:
        entries = watchlist.entries(person_id="person-02")
    assert len(entries) == 2 and {e.enrolled_by for e in entries} == {"authoriser"} and {e.source for e in entries} == {"case file 17"}
    listed = {p["person_id"]: p for p in proposer.get("/api/watchlist").json()}
    assert listed["person-02"]["entries"] == 2
    assert [e.details["decision"] for e in audit_events(console.settings, action="proposal", proposal_id=proposal["proposal_id"])] \
        == ["proposed", "approve"]
    enrolled = show(console.settings, AuditFilter(person="person-02", action="enroll"))
    assert enrolled and enrolled[-1].actor == "authoriser" and enrolled[-1].details["via"] == "console"
    assert enrolled[-1].details["approval"] == {"proposal_id": proposal["proposal_id"], "proposed_by": "enroller-authoriser"}

    removed = proposer.post("/api/watchlist/person-02/remove", json={"reason": "case 17 closed"})
    assert removed.status_code == 200 and removed.json() == {"person_id": "person-02", "entries": 2, "photos": 2}
    with Watchlist(console.settings.milvus) as watchlist:
        assert not watchlist.entries(person_id="person-02")
    assert not ObjectStore(console.settings.s3).list_keys(console.settings.s3.watchlist_bucket, "person-02/")
    assert proposer.post("/api/watchlist/person-02/remove", json={"reason": "again"}).status_code == 404
    assert show(console.settings, AuditFilter(person="person-02", action="remove"))[-1].actor == "enroller-authoriser"


def test_a_rejected_proposal_enrols_nothing_and_keeps_no_photo(console):
    from tests.console.conftest import jpeg

    proposer, authoriser = console.login("enroller"), console.login("authoriser")
    proposal = proposer.post("/api/watchlist/proposals", json={
        "person_id": "person-rejected", "reason": "hunch", "expires": "1d", "photos": [{"data": base64.b64encode(jpeg("x")).decode()}],
    }).json()
    rejected = authoriser.post(f"/api/watchlist/proposals/{proposal['proposal_id']}/decision", json={"decision": "reject", "note": "no case"})
    assert rejected.json()["status"] == "rejected" and rejected.json()["decided_by"] == "authoriser"
    assert not list((console.ctx.proposals.root / proposal["proposal_id"]).glob("photo-*"))
    assert proposer.post("/api/watchlist/proposals", json={"person_id": "x", "reason": "r", "expires": "never",
                                                          "photos": [{"data": "aGVsbG8="}]}).status_code == 422
    assert proposer.post("/api/watchlist/proposals", json={"person_id": "x", "reason": "r", "expires": "1d",
                                                          "photos": [{"data": "aGVsbG8="}]}).status_code == 422  # not an image


def test_authoriser_starts_and_ends_a_deployment_others_only_read(console):
    authoriser = console.login("authoriser")
    ends = (utc_now() + timedelta(hours=2)).isoformat()
    started = authoriser.post("/api/deployments", json={"case": "case-42", "purpose": "find the suspect", "cameras": ["gate"],
                                                        "ends_at": ends, "persons": ["person-09"]})
    assert started.status_code == 201, started.text
    deployment = started.json()
    assert deployment["authorised_by"] == "authoriser" and deployment["persons"] == ["person-09"]
    assert deployment["deployment_id"] in {d["deployment_id"] for d in console.login("reviewer-a").get("/api/deployments").json()}
    assert console.login("reviewer-a").post("/api/deployments", json={"case": "c", "purpose": "p", "cameras": ["gate"],
                                                                    "ends_at": ends}).status_code == 403
    assert authoriser.post("/api/deployments", json={"case": "c", "purpose": "p", "cameras": ["gate"],
                                                     "ends_at": utc_now().isoformat()}).status_code == 409  # already over
    url = f"/api/deployments/{deployment['deployment_id']}/end"
    ended = authoriser.post(url, json={"reason": "suspect found"})
    assert ended.status_code == 200 and ended.json()["ended_by"] == "authoriser"
    assert authoriser.post(url, json={"reason": "again"}).status_code == 409
    actions = [e.action for e in show(console.settings, AuditFilter(deployment=deployment["deployment_id"]))]
    assert actions == ["deployment_start", "deployment_end"]


def test_auditor_sees_the_chain_verified(console):
    shown = console.login("auditor").get("/api/audit/verify")
    assert shown.status_code == 200
    assert shown.json() | {"anchor_note": ""} == AuditCheck.of(verify(console.settings)).model_dump() | {"anchor_note": ""}
    assert console.login("reviewer-a").get("/api/audit/verify").status_code == 403
