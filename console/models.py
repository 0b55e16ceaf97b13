"""The console API's request and response bodies (what ``/openapi.json`` describes)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from console.reviews import Review
from console.users import NAME_PATTERN, Role, User


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
