"""The console's HTTP API: login, users (admin), alert review (reviewer), audit (auditor), health probes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response

from console.app import ConsoleContext
from console.auth import COOKIE, Identity, authenticated, require
from console.models import AlertDetail, AlertImages, AlertOut, Decision, Health, Login, Me, NewUser, Problem, UserChange, UserOut
from console.users import NAME_PATTERN, Role, User
from schemas.events import AuditEvent, as_utc

ERRORS = {401: {"model": Problem}, 403: {"model": Problem}, 503: {"model": Problem}}
router = APIRouter(responses=ERRORS)

AlertId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]
UserName = Annotated[str, Path(pattern=NAME_PATTERN)]


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
    ctx.actions.audit(actor=admin.name, action="user", subject=body.name, reason="console user added",
                      details={"roles": [r.value for r in body.roles]})
    return UserOut.of(ctx.users.add(body.name, body.roles, body.password))


@router.patch("/api/users/{name}", response_model=UserOut, tags=["users"], responses={404: {"model": Problem}, 409: {"model": Problem}})
def change_user(name: UserName, body: UserChange, ctx: Ctx, admin: User = Depends(require(Role.admin))) -> UserOut:
    if ctx.users.get(name) is None:
        raise HTTPException(404, f"no user {name}")
    if name == admin.name and (body.disabled or (body.roles is not None and Role.admin not in body.roles)):
        raise HTTPException(409, "an admin cannot disable themselves or drop their own admin role")
    ctx.actions.audit(actor=admin.name, action="user", subject=name, reason="console user changed",
                      details={"roles": [r.value for r in body.roles] if body.roles is not None else None,
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
    ctx.actions.audit(actor=admin.name, action="user", subject=name, reason="console user removed", details={})
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
    return AlertOut.of(ctx.desk.decide(alert_id, reviewer.name, body.decision, body.note))


@router.get("/api/alerts/{alert_id}/images/{kind}", tags=["alerts"], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": Problem}})
def alert_image(alert_id: AlertId, kind: Literal["crop", "snapshot"], ctx: Ctx,
                reviewer: User = Depends(require(Role.reviewer))) -> Response:
    alert = ctx.desk.get(alert_id).alert
    key = alert.crop_key if kind == "crop" else alert.snapshot_key
    return _serve_image(ctx, reviewer, alert.person_id, alert_id, kind, ctx.settings.s3.evidence_bucket, key)


@router.get("/api/alerts/{alert_id}/images/enrolled/{index}", tags=["alerts"], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": Problem}})
def enrolled_image(alert_id: AlertId, index: Annotated[int, Path(ge=0, le=1000)], ctx: Ctx,
                   reviewer: User = Depends(require(Role.reviewer))) -> Response:
    person = ctx.desk.get(alert_id).alert.person_id
    keys = _enrolled_keys(ctx, person)
    if index >= len(keys):
        raise HTTPException(404, f"{person} has {len(keys)} enrolled photo(s)")
    return _serve_image(ctx, reviewer, person, alert_id, "enrolled", ctx.settings.s3.watchlist_bucket, keys[index])


def _serve_image(ctx: ConsoleContext, user: User, person: str, alert_id: str, kind: str, bucket: str, key: str) -> Response:
    """The image, after its view is audited (no audit, no image)."""
    data = ctx.store.get_bytes(bucket, key)
    ctx.actions.audit(actor=user.name, action="view", subject=person, reason="alert review",
                      details={"alert_id": alert_id, "image": kind, "bucket": bucket, "key": key})
    media = "image/png" if key.lower().endswith(".png") else "image/jpeg"
    return Response(data, media_type=media, headers={"Cache-Control": "no-store, private"})


# ---------------------------------------------------------------- audit (auditor)

@router.get("/api/audit", response_model=list[AuditEvent], tags=["audit"])
def audit_log(ctx: Ctx, person: Annotated[str | None, Query(max_length=128)] = None,
              actor: Annotated[str | None, Query(max_length=128)] = None,
              action: Annotated[str | None, Query(max_length=64)] = None,
              since: datetime | None = None, until: datetime | None = None,
              limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
              _: User = Depends(require(Role.auditor))) -> list[AuditEvent]:
    events = ctx.actions.audit_log(person=person, actor=actor, action=action, since=as_utc(since) if since else None,
                                   until=as_utc(until) if until else None)
    return events[-limit:]
