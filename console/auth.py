"""Who is asking: login sessions (expiring, cookie-borne), rate-limited logins, CSRF tokens, trusted-proxy identities.

A request is authenticated by its session cookie (``HttpOnly``, ``SameSite=Strict``,
``Secure`` behind TLS), or, when it comes straight from a configured proxy
address, by that proxy's user header; either way the user must exist in the
users file, enabled, and their roles come from there. Every state-changing
request must carry the identity's CSRF token in ``X-CSRF-Token`` (``GET /api/me``
returns it): a cross-site form cannot read it, so it cannot send it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request

from console.users import Role, User

COOKIE = "vigil_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    user: str
    expires: float  # time.time()
    csrf: str


class Sessions:
    """Live sessions by the hash of their token (a leaked memory dump holds no usable cookie). Lost on restart: log in again."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(user, time.time() + self.ttl_s, secrets.token_urlsafe(32))
        with self._lock:
            now = time.time()
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
            self._sessions[_digest(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(_digest(token))
            if session and session.expires <= time.time():
                del self._sessions[_digest(token)]
                return None
            return session

    def drop(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(_digest(token), None)

    def drop_user(self, name: str) -> None:
        with self._lock:
            self._sessions = {k: s for k, s in self._sessions.items() if s.user != name}


class LoginLimiter:
    """At most ``max_failures`` failed logins per key (client address, user name) within ``window_s``."""

    def __init__(self, max_failures: int, window_s: float):
        self.max_failures, self.window_s = max_failures, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, keys: list[str]) -> float:
        """Seconds until every key may try again; 0 when none is blocked."""
        now, wait = time.monotonic(), 0.0
        with self._lock:
            for key in keys:
                times = self._failures.get(key, deque())
                while times and times[0] <= now - self.window_s:
                    times.popleft()
                if len(times) >= self.max_failures:
                    wait = max(wait, times[0] + self.window_s - now)
        return wait

    def failed(self, keys: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)


@dataclass(frozen=True)
class Identity:
    user: User
    csrf: str
    via: str  # "session" or "proxy"


class Trust:
    """The proxy addresses whose identity and X-Forwarded-* headers are believed."""

    def __init__(self, proxies: list[str], user_header: str):
        self.networks = [ipaddress.ip_network(p, strict=False) for p in proxies]
        self.user_header = user_header

    def trusted(self, request: Request) -> bool:
        host = request.client.host if request.client else None
        try:
            address = ipaddress.ip_address(host) if host else None
        except ValueError:
            return False
        return address is not None and any(address in net for net in self.networks)

    def client_address(self, request: Request) -> str:
        """The end client: the proxy's X-Forwarded-For last hop when the peer is a trusted proxy, else the peer."""
        peer = request.client.host if request.client else "unknown"
        if self.trusted(request):
            forwarded = request.headers.get("x-forwarded-for", "").split(",")[-1].strip()
            return forwarded or peer
        return peer

    def https(self, request: Request) -> bool:
        if request.url.scheme == "https":
            return True
        return self.trusted(request) and request.headers.get("x-forwarded-proto", "").lower() == "https"


def identify(request: Request) -> Identity | None:
    """The caller, from the session cookie or a trusted proxy's header; None when anonymous."""
    ctx = request.app.state.ctx
    session = ctx.sessions.get(request.cookies.get(COOKIE))
    if session:
        user = ctx.users.get(session.user)
        if user and not user.disabled:
            return Identity(user, session.csrf, "session")
        return None
    if ctx.trust.networks and ctx.trust.trusted(request):
        name = request.headers.get(ctx.trust.user_header)
        user = ctx.users.get(name) if name else None
        if user and not user.disabled:
            return Identity(user, hmac.new(ctx.secret, f"proxy:{name}".encode(), "sha256").hexdigest(), "proxy")
    return None


def authenticated(request: Request) -> Identity:
    """Dependency: the caller (401 when anonymous); state-changing requests must carry its CSRF token (403)."""
    ident = identify(request)
    if ident is None:
        raise HTTPException(401, "log in first", headers={"WWW-Authenticate": "Cookie"})
    if request.method not in SAFE_METHODS and not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), ident.csrf):
        raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header")
    return ident


def require(*roles: Role):
    """Dependency: an authenticated user holding one of ``roles`` (403 otherwise)."""
    def dependency(ident: Identity = Depends(authenticated)) -> User:
        if not ident.user.has(*roles):
            raise HTTPException(403, f"needs the role {' or '.join(r.value for r in roles)}")
        return ident.user
    return dependency
