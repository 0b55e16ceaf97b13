"""The console API's request and response bodies (what ``/openapi.json`` describes)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from accountability.audit import ChainReport
from console.proposals import Proposal
from console.reviews import Review
from console.users import NAME_PATTERN, Role, User
from storage.vectors import Entry

PERSON_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Body):
    detail: str = Field(description="What went wrong, for a person; never a stack trace.")


class Login(_Body):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Me(_Body):
    name: str
    roles: list[Role]
    csrf_token: str = Field(description="Send it as X-CSRF-Token on every POST, PATCH and DELETE.")
    via: Literal["session", "proxy"]


class UserOut(_Body):
    name: str
    roles: list[Role]
    disabled: bool

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(name=user.name, roles=user.roles, disabled=user.disabled)


class NewUser(_Body):
    name: str = Field(pattern=NAME_PATTERN)
    roles: list[Role] = Field(min_length=1)
    password: str = Field(min_length=10, max_length=1024)


class UserChange(_Body):
    roles: list[Role] | None = Field(None, min_length=1)
    password: str | None = Field(None, min_length=10, max_length=1024)
    disabled: bool | None = None


class AlertOut(_Body):
    alert_id: str
    person_id: str
    camera_id: str
    seen_at: datetime = Field(description="Capture time of the alert's best face (UTC).")
    score: float
    threshold: float
    track_id: str | None
    track_score: float | None
    track_faces: int | None
    run_id: str | None
    deployment_id: str | None = Field(description="The deployment (authorised use) the alert was raised under.")
    case: str | None = Field(description="The case or reference of that deployment.")
    status: Literal["open", "confirmed", "rejected"]
    confirmed_by: list[str]
    rejected_by: str | None
    confirmations_required: int

    @classmethod
    def of(cls, review: Review) -> AlertOut:
        a = review.alert
        return cls(alert_id=a.alert_id, person_id=a.person_id, camera_id=a.camera_id, seen_at=a.source_ts, score=a.score,
                   threshold=a.threshold, track_id=a.track_id, track_score=a.track_score, track_faces=a.track_faces,
                   run_id=a.run_id, deployment_id=a.deployment_id, case=a.case, status=review.status,
                   confirmed_by=review.confirmed_by, rejected_by=review.rejection.reviewer if review.rejection else None,
                   confirmations_required=review.required)


class AlertImages(_Body):
    crop: str = Field(description="URL of the face crop as seen (each fetch is audited).")
    snapshot: str = Field(description="URL of the whole frame.")
    enrolled: list[str] = Field(description="URLs of the person's enrolled photos.")


class AlertDetail(AlertOut):
    images: AlertImages


class Decision(_Body):
    decision: Literal["confirm", "reject"]
    note: str | None = Field(None, max_length=1000, description="Why, in the reviewer's words (recorded in the audit).")


class Health(_Body):
    status: str
    detail: str | None = None


class PersonOut(_Body):
    person_id: str
    entries: int
    expires_at: datetime = Field(description="When the person's last entry expires (UTC).")
    enrolled_by: list[str]
    sources: list[str]

    @classmethod
    def group(cls, entries: list[Entry]) -> list[PersonOut]:
        people: dict[str, list[Entry]] = {}
        for entry in entries:
            people.setdefault(entry.person_id, []).append(entry)
        return [cls(person_id=person, entries=len(es), expires_at=datetime.fromtimestamp(max(e.expires_at for e in es) / 1000, timezone.utc),
                    enrolled_by=sorted({e.enrolled_by for e in es}), sources=sorted({e.source for e in es}))
                for person, es in sorted(people.items())]


class Removal(_Body):
    reason: str = Field(min_length=1, max_length=1000, pattern=r"\S", description="Why the person is removed (recorded in the audit).")


class RemovalOut(_Body):
    person_id: str
    entries: int = Field(description="Vectors deleted from Milvus.")
    photos: int = Field(description="Enrolment photos deleted from S3.")


class PhotoIn(_Body):
    data: str = Field(min_length=1, max_length=14_000_000, description="The photo, JPEG or PNG, base64-encoded.")


class NewProposal(_Body):
    person_id: str = Field(pattern=PERSON_PATTERN)
    reason: str = Field(min_length=1, max_length=1000, pattern=r"\S", description="Why this person belongs on the watchlist.")
    source: str | None = Field(None, max_length=500, description="Where the photos come from (recorded with each entry).")
    expires: str = Field(min_length=1, max_length=64, description="When the entry expires: a duration (30d, 12h), a date (2026-12-31) or an ISO time.")
    photos: list[PhotoIn] = Field(min_length=1, max_length=10)


class ProposalDecision(_Body):
    decision: Literal["approve", "reject"]
    note: str | None = Field(None, max_length=1000)


class ProposalOut(_Body):
    proposal_id: str
    person_id: str
    reason: str
    source: str | None
    expires_at: datetime
    photos: list[str] = Field(description="URLs of the proposed photos while the proposal is pending (authorisers only; each view audited).")
    proposed_by: str
    proposed_at: datetime
    status: Literal["pending", "approved", "rejected"]
    decided_by: str | None
    decided_at: datetime | None
    note: str | None
    enrolled: int | None
    refused: dict[str, str]

    @classmethod
    def of(cls, p: Proposal) -> ProposalOut:
        urls = [f"/api/watchlist/proposals/{p.proposal_id}/photos/{i}" for i in range(len(p.photos))] if p.status == "pending" else []
        return cls(**p.model_dump(exclude={"photos"}), photos=urls)


class DeploymentStart(_Body):
    case: str = Field(min_length=1, max_length=200, pattern=r"\S")
    purpose: str = Field(min_length=1, max_length=1000, pattern=r"\S")
    cameras: list[str] = Field(min_length=1, max_length=100)
    ends_at: datetime
    starts_at: datetime | None = None
    persons: list[str] | None = Field(None, description="The persons who may match; null: every entry in force.")
    kind: Literal["live", "retrospective"] = "live"


class DeploymentEnd(_Body):
    reason: str = Field(min_length=1, max_length=1000, pattern=r"\S")


class AuditCheck(_Body):
    ok: bool
    events: int = Field(description="Sealed events that verify.")
    pending: int = Field(description="Requests not sealed yet.")
    anchors: int = Field(description="S3 anchors checked.")
    anchor_note: str
    first_break: str | None = Field(description="The first event where the chain breaks, and why; null when it holds.")
    breaks: list[str]

    @classmethod
    def of(cls, report: ChainReport) -> AuditCheck:
        breaks = [str(b) for b in report.breaks]
        return cls(ok=report.ok, events=report.events, pending=report.pending, anchors=report.anchors,
                   anchor_note=report.anchor_note, first_break=breaks[0] if breaks else None, breaks=breaks)
