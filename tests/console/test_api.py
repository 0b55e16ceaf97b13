"""The console API against the real broker, S3 server and Milvus: every role, every refusal, two-person confirmation."""

from __future__ import annotations

import base64
import time
from datetime import timedelta

import httpx
import pytest
from fastapi.routing import APIRoute

from console.auth import COOKIE
from console.users import Role
from runtime.kafka import EventReader
from accountability.actors import Actor
from accountability.audit import AuditFilter, show
from accountability.deployments import DeploymentRequest
from schemas.events import AuditEvent, ConfirmedAlertEvent, ReviewDecisionEvent, utc_now
from schemas.topics import CONFIRMED, REVIEWS
from tests.console.conftest import PASSWORD, Console, console_settings, jpeg

pytestmark = pytest.mark.services

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("POST", "/api/login")}
# Every API route, with a request for it and the roles it serves (None: any authenticated user).
ROUTES = {
    ("POST", "/api/logout"): (None, None),
    ("GET", "/api/me"): (None, None),
    ("GET", "/api/users"): (None, {Role.admin}),
    ("POST", "/api/users"): ({"name": "x-{role}", "roles": ["auditor"], "password": "long enough password"}, {Role.admin}),
    ("PATCH", "/api/users/{name}"): ({"disabled": False}, {Role.admin}),
    ("DELETE", "/api/users/{name}"): (None, {Role.admin}),
    ("GET", "/api/alerts"): (None, {Role.reviewer, Role.auditor}),
    ("GET", "/api/alerts/{alert_id}"): (None, {Role.reviewer}),
    ("POST", "/api/alerts/{alert_id}/decision"): ({"decision": "reject"}, {Role.reviewer}),
    ("GET", "/api/alerts/{alert_id}/images/{kind}"): (None, {Role.reviewer}),
    ("GET", "/api/alerts/{alert_id}/images/enrolled/{index}"): (None, {Role.reviewer}),
    ("GET", "/api/audit"): (None, {Role.auditor}),
    ("GET", "/api/audit/verify"): (None, {Role.auditor}),
    ("GET", "/api/watchlist"): (None, {Role.enroller, Role.authoriser}),
    ("POST", "/api/watchlist/{person_id}/remove"): ({"reason": "test"}, {Role.enroller, Role.authoriser}),
    ("GET", "/api/watchlist/proposals"): (None, {Role.enroller, Role.authoriser}),
    ("POST", "/api/watchlist/proposals"): ({"person_id": "p-{role}", "reason": "test", "expires": "1d", "photos": [{"data": "{photo}"}]},
                                           {Role.enroller}),
    ("GET", "/api/watchlist/proposals/{proposal_id}/photos/{index}"): (None, {Role.authoriser}),
    ("POST", "/api/watchlist/proposals/{proposal_id}/decision"): ({"decision": "reject"}, {Role.authoriser}),
    ("GET", "/api/deployments"): (None, {Role.authoriser, Role.reviewer, Role.auditor}),
    ("POST", "/api/deployments"): ({"case": "c-{role}", "purpose": "test", "cameras": ["cam-x"], "ends_at": "{tomorrow}"},
                                   {Role.authoriser}),
    ("POST", "/api/deployments/{deployment_id}/end"): ({"reason": "test"}, {Role.authoriser}),
}


def api_routes() -> set[tuple[str, str]]:
    from console.routes import router

    return {(method, route.path) for route in router.routes if isinstance(route, APIRoute) for method in route.methods}


def audit_events(settings, actor: str | None = None, action: str | None = None, **details) -> list[AuditEvent]:
    """The audit (sealed, then requests not sealed yet) as accountability shows it, filtered by actor, action and details."""
    events = show(settings, AuditFilter(actor=actor, action=action))
    return [e for e in events if all(e.details.get(k) == v for k, v in details.items())]


def test_every_route_is_in_the_role_table():
    assert api_routes() == set(ROUTES) | PUBLIC


def test_anonymous_gets_401_everywhere_but_login_page_and_probes(console):
    client = console.client()
    for method, path in ROUTES:
        url = path.format(name="reviewer-a", alert_id="x", kind="crop", index=0, person_id="p", proposal_id="0" * 32,
                          deployment_id="d")
        assert client.request(method, url).status_code == 401, (method, path)
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["status"] == "ready"
    page = client.get("/")
    assert page.status_code == 200 and "Log in" in page.text
    assert client.get("/static/app.js").status_code == 200


def filled(value, **names):
    """``value`` with every ``{name}`` in its strings filled in, nested lists and dicts included."""
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [filled(v, **names) for v in value]
    if isinstance(value, dict):
        return {k: filled(v, **names) for k, v in value.items()}
    return value


@pytest.mark.parametrize("role", list(Role))
def test_each_role_reaches_its_routes_and_gets_403_elsewhere(console, role):
    user = {Role.admin: "admin", Role.authoriser: "authoriser", Role.enroller: "enroller", Role.reviewer: "reviewer-b",
            Role.auditor: "auditor"}[role]
    target = f"target-{role.value}"
    console.ctx.users.add(target, [Role.auditor], PASSWORD)
    alert = console.raise_alert()  # its person has an enrolment photo in S3: something to remove
    proposal = console.ctx.proposals.create(person_id=f"proposed-{role.value}", reason="test", source=None,
                                            expires_at=utc_now() + timedelta(days=1), proposed_by="enroller",
                                            photos=[("image/jpeg", jpeg("proposed"))])
    deployment = console.ctx.actions.start_deployment(
        Actor("authoriser", "console", frozenset({"authoriser"})),
        DeploymentRequest(case=f"case-{role.value}", purpose="test", cameras=["cam-x"], ends_at=utc_now() + timedelta(hours=1)))
    names = dict(name=target, alert_id=alert.alert_id, kind="crop", index=0, person_id=alert.person_id,
                 proposal_id=proposal.proposal_id, deployment_id=deployment.deployment_id, role=role.value,
                 photo=base64.b64encode(jpeg("photo")).decode(), tomorrow=(utc_now() + timedelta(days=1)).isoformat())
    client = console.login(user)
    for (method, path), (body, roles) in ROUTES.items():
        if path == "/api/logout":
            continue
        response = client.request(method, path.format(**names), json=filled(body, **names))
        if roles is None or role in roles:
            assert response.status_code in (200, 201, 204), (role, method, path, response.text)
        else:
            assert response.status_code == 403, (role, method, path, response.text)
    assert client.post("/api/logout").status_code == 204
    assert client.get("/api/me").status_code == 401


def test_state_changes_need_the_csrf_token(console):
    client = console.login("reviewer-a")
    alert = console.raise_alert()
    token = client.headers.pop("X-CSRF-Token")
    response = client.post(f"/api/alerts/{alert.alert_id}/decision", json={"decision": "confirm"})
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    client.headers["X-CSRF-Token"] = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert client.post(f"/api/alerts/{alert.alert_id}/decision", json={"decision": "confirm"}).status_code == 403
    assert console.ctx.desk.get(alert.alert_id).confirmations == []


def test_two_reviewers_confirm_and_the_alert_is_published_and_audited(console):
    alert = console.raise_alert("person-two-person")
    a, b = console.login("reviewer-a"), console.login("reviewer-b")
    url = f"/api/alerts/{alert.alert_id}/decision"

    first = a.post(url, json={"decision": "confirm", "note": "same face"})
    assert first.status_code == 200 and first.json()["status"] == "open" and first.json()["confirmed_by"] == ["reviewer-a"]
    again = a.post(url, json={"decision": "confirm"})
    assert again.status_code == 409 and "second reviewer" in again.json()["detail"]
    second = b.post(url, json={"decision": "confirm"})
    assert second.status_code == 200 and second.json()["status"] == "confirmed"
    assert second.json()["confirmed_by"] == ["reviewer-a", "reviewer-b"]
    assert b.post(url, json={"decision": "reject"}).status_code == 409  # closed

    with EventReader(console.settings.kafka, CONFIRMED) as reader:
        confirmed = [r.event for r in reader.follow(idle_timeout_s=2)
                     if isinstance(r.event, ConfirmedAlertEvent) and r.event.alert.alert_id == alert.alert_id]
    assert len(confirmed) == 1 and confirmed[0].alert == alert and confirmed[0].confirmed_by == ["reviewer-a", "reviewer-b"]
    reviews = audit_events(console.settings, action="review", alert_id=alert.alert_id)
    assert [(e.actor, e.details["decision"]) for e in reviews] == [("reviewer-a", "confirm"), ("reviewer-b", "confirm")]
    assert all(e.subject == "person-two-person" for e in reviews)


def test_one_rejection_closes_the_alert(console):
    alert = console.raise_alert()
    a, b = console.login("reviewer-a"), console.login("reviewer-b")
    url = f"/api/alerts/{alert.alert_id}/decision"
    assert a.post(url, json={"decision": "confirm"}).json()["status"] == "open"
    rejected = b.post(url, json={"decision": "reject", "note": "different person"})
    assert rejected.json()["status"] == "rejected" and rejected.json()["rejected_by"] == "reviewer-b"
    assert console.login("reviewer-b").post(url, json={"decision": "confirm"}).status_code == 409
    assert alert.alert_id in {x["alert_id"] for x in a.get("/api/alerts", params={"status": "rejected"}).json()}
    assert alert.alert_id not in {x["alert_id"] for x in a.get("/api/alerts", params={"status": "open"}).json()}


def test_unknown_alert_is_404(console):
    client = console.login("reviewer-a")
    assert client.post("/api/alerts/nosuchalert/decision", json={"decision": "confirm"}).status_code == 404
    assert client.get("/api/alerts/nosuchalert").status_code == 404


def test_review_state_survives_a_restart(stack, console, state_dir):
    from console.app import running

    half, done = console.raise_alert(), console.raise_alert()
    a, b = console.login("reviewer-a"), console.login("reviewer-b")
    a.post(f"/api/alerts/{half.alert_id}/decision", json={"decision": "confirm"})
    a.post(f"/api/alerts/{done.alert_id}/decision", json={"decision": "confirm"})
    b.post(f"/api/alerts/{done.alert_id}/decision", json={"decision": "confirm"})

    with running(console_settings(stack, state_dir)) as (url, ctx):
        assert ctx.desk.get(half.alert_id).confirmed_by == ["reviewer-a"]
        assert ctx.desk.get(done.alert_id).status == "confirmed" and ctx.desk.get(done.alert_id).published
        again = Console(url, ctx, console.settings).login("reviewer-a")
        assert again.post(f"/api/alerts/{half.alert_id}/decision", json={"decision": "confirm"}).status_code == 409
    with EventReader(console.settings.kafka, CONFIRMED) as reader:  # not published a second time
        assert sum(1 for r in reader.follow(idle_timeout_s=2) if r.event and r.event.alert.alert_id == done.alert_id) == 1
    with EventReader(console.settings.kafka, REVIEWS) as reader:
        decisions = [r.event for r in reader.follow(idle_timeout_s=2) if isinstance(r.event, ReviewDecisionEvent)
                     and r.event.alert_id == half.alert_id]
    assert [d.reviewer for d in decisions] == ["reviewer-a"]


def test_images_are_served_to_reviewers_only_and_each_view_is_audited(console):
    alert = console.raise_alert("person-images")
    reviewer = console.login("reviewer-a")
    detail = reviewer.get(f"/api/alerts/{alert.alert_id}").json()
    assert detail["person_id"] == "person-images" and len(detail["images"]["enrolled"]) == 1
    for url in (detail["images"]["crop"], detail["images"]["snapshot"], detail["images"]["enrolled"][0]):
        image = reviewer.get(url)
        assert image.status_code == 200 and image.content[:2] == b"\xff\xd8" and "no-store" in image.headers["cache-control"]
        assert console.login("auditor").get(url).status_code == 403
    views = audit_events(console.settings, action="view", alert_id=alert.alert_id)
    assert sorted(e.details["image"] for e in views) == ["crop", "enrolled", "snapshot"]
    assert {(e.actor, e.subject) for e in views} == {("reviewer-a", "person-images")}
    assert reviewer.get(f"/api/alerts/{alert.alert_id}/images/enrolled/5").status_code == 404


def test_auditor_filters_the_audit(console):
    alert = console.raise_alert()
    console.login("reviewer-b").post(f"/api/alerts/{alert.alert_id}/decision", json={"decision": "reject"})
    events = console.login("auditor").get("/api/audit", params={"actor": "reviewer-b", "action": "review"}).json()
    assert events and all(e["actor"] == "reviewer-b" and e["action"] == "review" for e in events)
    assert alert.alert_id in {e["details"]["alert_id"] for e in events}


def test_cookie_flags_and_security_headers(console):
    client = console.client()
    response = client.post("/api/login", json={"name": "reviewer-a", "password": PASSWORD})
    cookie = response.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert client.get("/").headers["x-content-type-options"] == "nosniff"


def test_login_is_rate_limited_per_address_and_per_name(console):
    console.ctx.users.add("victim", [Role.reviewer], PASSWORD)
    attacker = httpx.Client(base_url=console.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    for _ in range(console.settings.console.login_max_failures):
        assert attacker.post("/api/login", json={"name": "victim", "password": "wrong password"}).status_code == 401
    limited = attacker.post("/api/login", json={"name": "victim", "password": PASSWORD})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert attacker.post("/api/login", json={"name": "auditor", "password": PASSWORD}).status_code == 429  # the address
    assert console.client().post("/api/login", json={"name": "victim", "password": PASSWORD}).status_code == 429  # the name
    console.login("auditor")  # others, from elsewhere, are not locked out


def test_admin_manages_users_and_changes_take_effect_at_once(console):
    admin = console.login("admin")
    created = admin.post("/api/users", json={"name": "newcomer", "roles": ["reviewer"], "password": "a long password"})
    assert created.status_code == 201 and created.json() == {"name": "newcomer", "roles": ["reviewer"], "disabled": False}
    assert admin.post("/api/users", json={"name": "newcomer", "roles": ["auditor"], "password": "a long password"}).status_code == 409
    newcomer = console.login("newcomer", "a long password")
    assert newcomer.get("/api/alerts").status_code == 200 and newcomer.get("/api/audit").status_code == 403
    assert admin.patch("/api/users/newcomer", json={"roles": ["auditor"]}).json()["roles"] == ["auditor"]
    assert newcomer.get("/api/audit").status_code == 200  # roles are read per request
    admin.patch("/api/users/newcomer", json={"disabled": True})
    assert newcomer.get("/api/me").status_code == 401
    assert admin.delete("/api/users/admin").status_code == 409
    assert admin.patch("/api/users/admin", json={"roles": ["auditor"]}).status_code == 409
    assert admin.delete("/api/users/newcomer").status_code == 204
    assert admin.delete("/api/users/newcomer").status_code == 404
    changes = audit_events(console.settings, actor="admin", action="user")
    assert {e.subject for e in changes} >= {"newcomer"}
    assert console.ctx.users.path.stat().st_mode & 0o777 == 0o600


def test_openapi_document_for_logged_in_users(console):
    doc = console.login("auditor").get("/openapi.json").json()
    assert doc["info"]["title"] == "Vigil console"
    assert "/api/alerts/{alert_id}/decision" in doc["paths"] and "Decision" in doc["components"]["schemas"]


def test_server_errors_say_nothing_of_the_code(console, monkeypatch):
    def broken(status=None):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(console.ctx.desk, "alerts", broken)
    response = console.login("reviewer-a").get("/api/alerts")
    assert response.status_code == 500
    assert "internal error" in response.json()["detail"]
    assert "secret internal detail" not in response.text and "Traceback" not in response.text


def test_sessions_expire_and_trusted_proxies_alone_may_name_the_user(stack, state_dir):
    from console.app import running

    settings = console_settings(stack, state_dir, session_ttl_s=1.0, trusted_proxies=["127.0.0.0/8"])
    with running(settings) as (url, ctx):
        console = Console(url, ctx, settings)
        cookie = {"Cookie": f"{COOKIE}={console.login('auditor').cookies[COOKIE]}"}  # sent by hand: the server must expire it
        assert console.client().get("/api/me", headers=cookie).status_code == 200
        time.sleep(1.5)
        assert console.client().get("/api/me", headers=cookie).status_code == 401
        proxied = console.client()
        me = proxied.get("/api/me", headers={"Remote-User": "auditor"})
        assert me.status_code == 200 and me.json()["via"] == "proxy" and me.json()["roles"] == ["auditor"]
        assert proxied.get("/api/me", headers={"Remote-User": "nobody"}).status_code == 401
        assert proxied.post("/api/logout", headers={"Remote-User": "auditor"}).status_code == 403  # no CSRF token
    settings = console_settings(stack, state_dir, trusted_proxies=["10.9.8.7/32"])
    with running(settings) as (url, ctx):
        assert Console(url, ctx, settings).client().get("/api/me", headers={"Remote-User": "auditor"}).status_code == 401
