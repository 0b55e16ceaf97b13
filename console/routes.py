"""The console's HTTP API: login, users (admin), alert review (reviewer), audit (auditor), health probes."""

from __future__ import annotations

import base64
import binascii
import io
import tempfile
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from PIL import Image, UnidentifiedImageError

from accountability.audit import AuditFilter
from accountability.deployments import DeploymentRequest
from console.actions import actor_of
from console.app import ConsoleContext
from console.auth import COOKIE, Identity, authenticated, require
from console.models import (AlertDetail, AlertImages, AlertOut, AuditCheck, Decision, DeploymentEnd, DeploymentStart, Health, Login,
                            Me, NewProposal, NewUser, PersonOut, Problem, ProposalDecision, ProposalOut, Removal, RemovalOut,
                            UserChange, UserOut)
from console.users import NAME_PATTERN, Role, User
from schemas.events import AuditEvent, DeploymentEvent, as_utc, new_id

ERRORS = {401: {"model": Problem}, 403: {"model": Problem}, 503: {"model": Problem}}
router = APIRouter(responses=ERRORS)

AlertId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]
UserName = Annotated[str, Path(pattern=NAME_PATTERN)]
ProposalId = Annotated[str, Path(pattern=r"^[a-f0-9]{32}$")]
DeploymentId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]
PersonId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]
MAX_PHOTO_BYTES = 10 * 1024 * 1024


def context(request: Request) -> ConsoleContext:
    return request.app.state.ctx


Ctx = Annotated[ConsoleContext, Depends(context)]


# ---------------------------------------------------------------- health and login (anonymous)

@router.get("/healthz", response_model=Health, tags=["health"])
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["health"])
def readyz(ctx: Ctx, response: Response) -> Health:
    if ctx.desk.caught_up.is_set() and not ctx.desk.error:
        return Health(status="ready")
    response.status_code = 503
    return Health(status="not ready", detail=ctx.desk.error or "reading the review state")


def _me(ident: Identity) -> Me:
    return Me(name=ident.user.name, roles=ident.user.roles, csrf_token=ident.csrf, via=ident.via)


@router.post("/api/login", response_model=Me, tags=["session"], responses={429: {"model": Problem}})
def login(body: Login, request: Request, response: Response, ctx: Ctx) -> Me:
    keys = [f"addr:{ctx.trust.client_address(request)}", f"user:{body.name}"]
    wait = ctx.limiter.retry_after(keys)
    if wait:
        raise HTTPException(429, f"too many failed logins; try again in {wait:.0f} s", headers={"Retry-After": str(int(wait) + 1)})
    user = ctx.users.authenticate(body.name, body.password)
    if user is None:
        ctx.limiter.failed(keys)
        raise HTTPException(401, "wrong name or password")
    token, session = ctx.sessions.create(user.name)
    secure = ctx.settings.console.secure_cookies
    response.set_cookie(COOKIE, token, max_age=int(ctx.settings.console.session_ttl_s), httponly=True, samesite="strict",
                        secure=ctx.trust.https(request) if secure is None else secure, path="/")
    return _me(Identity(user, session.csrf, "session"))


@router.post("/api/logout", status_code=204, tags=["session"])
def logout(request: Request, response: Response, ctx: Ctx, ident: Identity = Depends(authenticated)) -> Response:
    ctx.sessions.drop(request.cookies.get(COOKIE))
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    response.status_code = 204
    return response


@router.get("/api/me", response_model=Me, tags=["session"])
def me(ident: Identity = Depends(authenticated)) -> Me:
    return _me(ident)


# ---------------------------------------------------------------- users (admin)

@router.get("/api/users", response_model=list[UserOut], tags=["users"])
def list_users(ctx: Ctx, _: User = Depends(require(Role.admin))) -> list[UserOut]:
    return [UserOut.of(u) for u in ctx.users.list()]


@router.post("/api/users", response_model=UserOut, status_code=201, tags=["users"], responses={409: {"model": Problem}})
def add_user(body: NewUser, ctx: Ctx, admin: User = Depends(require(Role.admin))) -> UserOut:
    ctx.actions.audit(actor_of(admin), "user", body.name, "console user added", {"roles": [r.value for r in body.roles]})
    return UserOut.of(ctx.users.add(body.name, body.roles, body.password))


@router.patch("/api/users/{name}", response_model=UserOut, tags=["users"], responses={404: {"model": Problem}, 409: {"model": Problem}})
def change_user(name: UserName, body: UserChange, ctx: Ctx, admin: User = Depends(require(Role.admin))) -> UserOut:
    if ctx.users.get(name) is None:
        raise HTTPException(404, f"no user {name}")
    if name == admin.name and (body.disabled or (body.roles is not None and Role.admin not in body.roles)):
        raise HTTPException(409, "an admin cannot disable themselves or drop their own admin role")
    ctx.actions.audit(actor_of(admin), "user", name, "console user changed",
                      {"roles": [r.value for r in body.roles] if body.roles is not None else None,
                       "password_changed": body.password is not None, "disabled": body.disabled})
    user = ctx.users.update(name, roles=body.roles, password=body.password, disabled=body.disabled)
    if body.password is not None or body.disabled:
        ctx.sessions.drop_user(name)
    return UserOut.of(user)


@router.delete("/api/users/{name}", status_code=204, tags=["users"], responses={404: {"model": Problem}, 409: {"model": Problem}})
def remove_user(name: UserName, ctx: Ctx, admin: User = Depends(require(Role.admin))) -> Response:
    if ctx.users.get(name) is None:
        raise HTTPException(404, f"no user {name}")
    if name == admin.name:
        raise HTTPException(409, "an admin cannot remove themselves")
    ctx.actions.audit(actor_of(admin), "user", name, "console user removed")
    ctx.users.remove(name)
    ctx.sessions.drop_user(name)
    return Response(status_code=204)


# ---------------------------------------------------------------- alert review (reviewer)

@router.get("/api/alerts", response_model=list[AlertOut], tags=["alerts"])
def list_alerts(ctx: Ctx, status: Literal["open", "confirmed", "rejected"] | None = None,
                _: User = Depends(require(Role.reviewer, Role.auditor))) -> list[AlertOut]:
    return [AlertOut.of(r) for r in ctx.desk.alerts(status)]


def _images(alert_id: str) -> AlertImages:
    return AlertImages(crop=f"/api/alerts/{alert_id}/images/crop", snapshot=f"/api/alerts/{alert_id}/images/snapshot",
                       enrolled=[])


@router.get("/api/alerts/{alert_id}", response_model=AlertDetail, tags=["alerts"], responses={404: {"model": Problem}})
def get_alert(alert_id: AlertId, ctx: Ctx, _: User = Depends(require(Role.reviewer))) -> AlertDetail:
    review = ctx.desk.get(alert_id)
    images = _images(alert_id)
    images.enrolled = [f"/api/alerts/{alert_id}/images/enrolled/{i}" for i in range(len(_enrolled_keys(ctx, review.alert.person_id)))]
    return AlertDetail(**AlertOut.of(review).model_dump(), images=images)


def _enrolled_keys(ctx: ConsoleContext, person_id: str) -> list[str]:
    return ctx.store.list_keys(ctx.settings.s3.watchlist_bucket, f"{person_id}/")


@router.post("/api/alerts/{alert_id}/decision", response_model=AlertOut, tags=["alerts"],
             responses={404: {"model": Problem}, 409: {"model": Problem}})
def decide(alert_id: AlertId, body: Decision, ctx: Ctx, reviewer: User = Depends(require(Role.reviewer))) -> AlertOut:
    """Confirm or reject: confirmed after two different reviewers confirm; one rejection closes it; the same reviewer twice is 409."""
    return AlertOut.of(ctx.desk.decide(alert_id, actor_of(reviewer), body.decision, body.note))


@router.get("/api/alerts/{alert_id}/images/{kind}", tags=["alerts"], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": Problem}})
def alert_image(alert_id: AlertId, kind: Literal["crop", "snapshot"], ctx: Ctx,
                reviewer: User = Depends(require(Role.reviewer))) -> Response:
    alert = ctx.desk.get(alert_id).alert
    key = alert.crop_key if kind == "crop" else alert.snapshot_key
    return _serve_image(ctx, reviewer, alert.person_id, "alert review", {"alert_id": alert_id, "image": kind},
                        ctx.settings.s3.evidence_bucket, key, deployment_id=alert.deployment_id)


@router.get("/api/alerts/{alert_id}/images/enrolled/{index}", tags=["alerts"], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": Problem}})
def enrolled_image(alert_id: AlertId, index: Annotated[int, Path(ge=0, le=1000)], ctx: Ctx,
                   reviewer: User = Depends(require(Role.reviewer))) -> Response:
    alert = ctx.desk.get(alert_id).alert
    keys = _enrolled_keys(ctx, alert.person_id)
    if index >= len(keys):
        raise HTTPException(404, f"{alert.person_id} has {len(keys)} enrolled photo(s)")
    return _serve_image(ctx, reviewer, alert.person_id, "alert review", {"alert_id": alert_id, "image": "enrolled"},
                        ctx.settings.s3.watchlist_bucket, keys[index], deployment_id=alert.deployment_id)


def _serve_image(ctx: ConsoleContext, user: User, person: str, reason: str, details: dict, bucket: str | None, key: str,
                 *, deployment_id: str | None = None, data: bytes | None = None) -> Response:
    """The image, after its view is audited (no audit, no image)."""
    data = ctx.store.get_bytes(bucket, key) if data is None else data
    ctx.actions.audit(actor_of(user), "view", person, reason, {**details, "bucket": bucket, "key": key}, deployment_id=deployment_id)
    media = "image/png" if key.lower().endswith(".png") else "image/jpeg"
    return Response(data, media_type=media, headers={"Cache-Control": "no-store, private"})


# ---------------------------------------------------------------- watchlist (enroller proposes, authoriser approves)

@router.get("/api/watchlist", response_model=list[PersonOut], tags=["watchlist"])
def watchlist(ctx: Ctx, _: User = Depends(require(Role.enroller, Role.authoriser))) -> list[PersonOut]:
    from storage.vectors import Watchlist

    with Watchlist(ctx.settings.milvus) as entries:
        entries.ensure_collection()
        return PersonOut.group(entries.entries())


@router.post("/api/watchlist/{person_id}/remove", response_model=RemovalOut, tags=["watchlist"], responses={404: {"model": Problem}})
def remove(person_id: PersonId, body: Removal, ctx: Ctx, user: User = Depends(require(Role.enroller, Role.authoriser))) -> RemovalOut:
    """Erase a person: every vector in Milvus and every enrolment photo in S3 (audited first)."""
    erasure = ctx.actions.remove(actor_of(user), person_id, body.reason)
    return RemovalOut(person_id=person_id, entries=len(erasure.entry_ids), photos=len(erasure.photo_keys))


@router.get("/api/watchlist/proposals", response_model=list[ProposalOut], tags=["watchlist"])
def proposals(ctx: Ctx, _: User = Depends(require(Role.enroller, Role.authoriser))) -> list[ProposalOut]:
    return [ProposalOut.of(p) for p in ctx.proposals.list()]


@router.post("/api/watchlist/proposals", response_model=ProposalOut, status_code=201, tags=["watchlist"],
             responses={422: {"model": Problem}})
def propose(body: NewProposal, ctx: Ctx, enroller: User = Depends(require(Role.enroller))) -> ProposalOut:
    """Propose an entry: it cannot match until an authoriser (not the proposer) approves it."""
    from vigil.enroll import EnrollmentError, check_expiry, parse_expiry

    try:
        expires_at = check_expiry(parse_expiry(body.expires), ctx.settings)
    except EnrollmentError as exc:
        raise HTTPException(422, str(exc)) from None
    photos = [_photo(p.data, i) for i, p in enumerate(body.photos)]
    proposal_id = new_id()
    ctx.actions.audit(actor_of(enroller), "proposal", body.person_id, body.reason,
                      {"decision": "proposed", "proposal_id": proposal_id, "photos": len(photos), "source": body.source,
                       "expires_at": expires_at.isoformat()})
    return ProposalOut.of(ctx.proposals.create(person_id=body.person_id, reason=body.reason, source=body.source, expires_at=expires_at,
                                               proposed_by=enroller.name, photos=photos, proposal_id=proposal_id))


def _photo(data: str, index: int) -> tuple[str, bytes]:
    """(media type, bytes) of a base64 JPEG or PNG, or 422."""
    try:
        raw = base64.b64decode(data, validate=True)
        if len(raw) > MAX_PHOTO_BYTES:
            raise ValueError(f"larger than {MAX_PHOTO_BYTES // (1024 * 1024)} MiB")
        with Image.open(io.BytesIO(raw)) as image:
            kind = image.format
            image.verify()
        if kind not in ("JPEG", "PNG"):
            raise ValueError(f"a {kind} image; give JPEG or PNG")
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as exc:
        raise HTTPException(422, f"photo {index}: not a readable JPEG or PNG ({exc})") from None
    return ("image/jpeg" if kind == "JPEG" else "image/png"), raw


def _proposal(ctx: ConsoleContext, proposal_id: str):
    try:
        return ctx.proposals.get(proposal_id)
    except KeyError:
        raise HTTPException(404, f"no proposal {proposal_id}") from None


@router.get("/api/watchlist/proposals/{proposal_id}/photos/{index}", tags=["watchlist"], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": Problem}})
def proposal_photo(proposal_id: ProposalId, index: Annotated[int, Path(ge=0, le=100)], ctx: Ctx,
                   user: User = Depends(require(Role.authoriser))) -> Response:
    proposal = _proposal(ctx, proposal_id)
    paths = ctx.proposals.photo_paths(proposal)
    if index >= len(paths) or not paths[index].exists():
        raise HTTPException(404, "no such photo (decided proposals keep none)")
    return _serve_image(ctx, user, proposal.person_id, "watchlist proposal review", {"proposal_id": proposal_id, "image": "proposed"},
                        None, paths[index].name, data=paths[index].read_bytes())


@router.post("/api/watchlist/proposals/{proposal_id}/decision", response_model=ProposalOut, tags=["watchlist"],
             responses={404: {"model": Problem}, 409: {"model": Problem}})
def decide_proposal(proposal_id: ProposalId, body: ProposalDecision, ctx: Ctx,
                    authoriser: User = Depends(require(Role.authoriser))) -> ProposalOut:
    """Approve (the photos are enrolled, through the CLI's enrolment) or reject; never one's own proposal."""
    proposal = _proposal(ctx, proposal_id)
    if proposal.proposed_by == authoriser.name:
        raise HTTPException(403, "nobody approves or rejects their own proposal")
    try:
        proposal = ctx.proposals.claim(proposal_id)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    try:
        actor = actor_of(authoriser)
        ctx.actions.audit(actor, "proposal", proposal.person_id, body.note or proposal.reason,
                          {"decision": body.decision, "proposal_id": proposal_id, "proposed_by": proposal.proposed_by})
        if body.decision == "reject":
            return ProposalOut.of(ctx.proposals.decide(proposal, status="rejected", decided_by=authoriser.name, note=body.note))
        with tempfile.TemporaryDirectory() as scratch:  # the enroller reads files; names say which photo was refused
            photos = []
            for i, path in enumerate(ctx.proposals.photo_paths(proposal)):
                photos.append(FilePath(scratch) / f"{proposal.person_id}-{i}{path.suffix}")
                photos[-1].write_bytes(path.read_bytes())
            result = ctx.actions.enrol(actor, proposal.person_id, photos, reason=proposal.reason, expires_at=proposal.expires_at,
                                       source=proposal.source,
                                       approval={"proposal_id": proposal_id, "proposed_by": proposal.proposed_by})
        return ProposalOut.of(ctx.proposals.decide(proposal, status="approved", decided_by=authoriser.name, note=body.note,
                                                   enrolled=len(result.enrolled),
                                                   refused={FilePath(k).name: v for k, v in result.refused.items()}))
    finally:
        ctx.proposals.release(proposal_id)


# ---------------------------------------------------------------- deployments (authoriser)

@router.get("/api/deployments", response_model=list[DeploymentEvent], tags=["deployments"])
def deployments(ctx: Ctx, _: User = Depends(require(Role.authoriser, Role.reviewer, Role.auditor))) -> list[DeploymentEvent]:
    return ctx.actions.list_deployments()


@router.post("/api/deployments", response_model=DeploymentEvent, status_code=201, tags=["deployments"],
             responses={409: {"model": Problem}})
def start_deployment(body: DeploymentStart, ctx: Ctx, authoriser: User = Depends(require(Role.authoriser))) -> DeploymentEvent:
    request = DeploymentRequest(case=body.case, purpose=body.purpose, cameras=body.cameras, ends_at=body.ends_at,
                                starts_at=body.starts_at, persons=body.persons, kind=body.kind)
    return ctx.actions.start_deployment(actor_of(authoriser), request)


@router.post("/api/deployments/{deployment_id}/end", response_model=DeploymentEvent, tags=["deployments"],
             responses={409: {"model": Problem}})
def end_deployment(deployment_id: DeploymentId, body: DeploymentEnd, ctx: Ctx,
                   authoriser: User = Depends(require(Role.authoriser))) -> DeploymentEvent:
    return ctx.actions.end_deployment(actor_of(authoriser), deployment_id, body.reason)


# ---------------------------------------------------------------- audit (auditor)

@router.get("/api/audit", response_model=list[AuditEvent], tags=["audit"])
def audit_log(ctx: Ctx, person: Annotated[str | None, Query(max_length=128)] = None,
              actor: Annotated[str | None, Query(max_length=128)] = None,
              action: Annotated[str | None, Query(max_length=64)] = None,
              deployment: Annotated[str | None, Query(max_length=128)] = None,
              since: datetime | None = None, until: datetime | None = None,
              limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
              _: User = Depends(require(Role.auditor))) -> list[AuditEvent]:
    """Sealed events that match every filter, in chain order, then requests not sealed yet (seq null)."""
    where = AuditFilter(person=person, actor=actor, action=action, deployment=deployment,
                        since=as_utc(since) if since else None, until=as_utc(until) if until else None)
    return ctx.actions.audit_events(where)[-limit:]


@router.get("/api/audit/verify", response_model=AuditCheck, tags=["audit"])
def verify_audit(ctx: Ctx, _: User = Depends(require(Role.auditor))) -> AuditCheck:
    """Walk the hash chain (and the S3 anchors): the first break, if any, by name."""
    return AuditCheck.of(ctx.actions.verify_audit())
