"""The console's FastAPI application, its security headers and error handling, and ``serve`` for ``vigil console``."""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from kafka.errors import KafkaError

from console.actions import Actions
from console.auth import LoginLimiter, Sessions, Trust, authenticated
from console.reviews import Refused, ReviewDesk
from accountability.actors import NotAuthorised
from accountability.deployments import DeploymentError
from accountability.topics import NotRecorded
from accountability.watchlist import NothingToRemove
from console.proposals import ProposalStore
from console.users import UserError, UserStore, state_dir
from runtime.kafka import BrokerUnavailable
from runtime.settings import VigilSettings
from storage.objects import ObjectNotFound, ObjectStore, StorageError
from storage.vectors import WatchlistError

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# A dependency is down: the request may succeed later (503), and nothing was done without its audit event.
UNAVAILABLE = (NotRecorded, KafkaError, BrokerUnavailable, StorageError, WatchlistError, ConnectionError, TimeoutError)


@dataclass
class ConsoleContext:
    """What every request handler reaches through ``request.app.state.ctx``."""

    settings: VigilSettings
    users: UserStore
    sessions: Sessions
    limiter: LoginLimiter
    trust: Trust
    secret: bytes  # keys the proxy identities' CSRF tokens
    desk: ReviewDesk
    actions: Actions
    store: ObjectStore
    proposals: ProposalStore


def create_app(settings: VigilSettings) -> FastAPI:
    """The application; its review feed starts with it (``app.router.lifespan``) and stops with it."""
    from console import routes

    cfg = settings.console
    actions = Actions(settings)
    home = state_dir(cfg)
    ctx = ConsoleContext(
        settings=settings, users=UserStore(home / "users.json"), sessions=Sessions(cfg.session_ttl_s),
        limiter=LoginLimiter(cfg.login_max_failures, cfg.login_window_s),
        trust=Trust(cfg.trusted_proxies, cfg.proxy_user_header), secret=secrets.token_bytes(32),
        desk=ReviewDesk(settings, actions.audit), actions=actions, store=ObjectStore(settings.s3),
        proposals=ProposalStore(home / "proposals"),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ctx.desk.start()
        try:
            yield
        finally:
            ctx.desk.stop()
            ctx.actions.close()

    app = FastAPI(title="Vigil console", version="1", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None,
                  description="Human oversight of Vigil: alert review with two-person confirmation, the watchlist, "
                              "deployments and the audit. Every route but /, /static, /api/login and the health probes "
                              "needs a login; POST, PATCH and DELETE need the X-CSRF-Token header from GET /api/me.")
    app.state.ctx = ctx

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(ObjectNotFound)
    async def not_found(request: Request, exc: ObjectNotFound):
        return JSONResponse({"detail": "no such image"}, status_code=404)

    @app.exception_handler(NothingToRemove)
    async def nothing(request: Request, exc: NothingToRemove):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(NotAuthorised)
    async def not_authorised(request: Request, exc: NotAuthorised):
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(DeploymentError)
    async def deployment_refused(request: Request, exc: DeploymentError):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    for kind in UNAVAILABLE:
        app.add_exception_handler(kind, _unavailable)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _internal)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> dict:
        authenticated(request)
        return app.openapi()

    app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


async def _unavailable(request: Request, exc: Exception):
    ref = uuid.uuid4().hex[:8]
    log.warning("dependency unavailable (ref %s) on %s %s: %r", ref, request.method, request.url.path, exc)
    return JSONResponse({"detail": f"a service the console needs is unavailable; nothing was done (ref {ref})"}, status_code=503)


async def _invalid(request: Request, exc: RequestValidationError):
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return JSONResponse({"detail": f"invalid request at {where}: {first.get('msg', 'invalid')}"}, status_code=422)


async def _internal(request: Request, exc: Exception):
    if isinstance(exc, HTTPException):  # pragma: no cover - FastAPI handles these before
        raise exc
    ref = uuid.uuid4().hex[:8]
    log.error("internal error (ref %s) on %s %s", ref, request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": f"internal error (ref {ref}); the console's log has the details"}, status_code=500)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one), so the address is known before the server runs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def server(settings: VigilSettings) -> uvicorn.Server:
    config = uvicorn.Config(create_app(settings), log_level="warning", proxy_headers=False, server_header=False,
                            access_log=False, timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def serve(settings: VigilSettings, sock: socket.socket) -> None:
    """Serve until interrupted (``vigil console``)."""
    server(settings).run(sockets=[sock])


@contextmanager
def running(settings: VigilSettings, host: str = "127.0.0.1", port: int = 0, ready_timeout_s: float = 120) -> Iterator[tuple[str, ConsoleContext]]:
    """A console served from a thread, for tests and the demo: yields its URL and context once its review state is read."""
    sock = bind(host, port)
    srv = server(settings)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, name="console", daemon=True)
    thread.start()
    try:
        ctx: ConsoleContext = srv.config.app.state.ctx
        if not ctx.desk.wait_ready(ready_timeout_s):
            raise TimeoutError(f"console review state not read within {ready_timeout_s:.0f}s: {ctx.desk.error}")
        yield url_of(sock), ctx
    finally:
        srv.should_exit = True
        thread.join(timeout=15)
        sock.close()
