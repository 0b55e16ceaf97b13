"""Helpers the tests of several packages share for accountability: an actor, deployments, audit records, the sequencer."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from accountability.actors import ROLES, Actor
from accountability.deployments import DeploymentRequest, Deployments
from accountability.topics import read_all
from runtime.settings import VigilSettings
from schemas.events import AuditEvent, DeploymentEvent, as_utc, utc_now
from schemas.topics import AUDIT, AUDIT_REQUESTS

TESTER = Actor("test-suite", "test", ROLES)


def deploy(settings: VigilSettings, cameras: list[str], *, run_ids: tuple[str, ...] = (), persons: list[str] | None = None,
           kind: str = "live", starts_at: datetime | None = None, ends_at: datetime | None = None,
           case: str = "case-test") -> DeploymentEvent:
    """Start a deployment as the test suite (every role)."""
    now = utc_now()
    with Deployments(settings) as deployments:
        return deployments.start(TESTER, DeploymentRequest(
            case=case, purpose="test", cameras=cameras, starts_at=starts_at or now - timedelta(days=1),
            ends_at=ends_at or now + timedelta(hours=2), persons=persons, kind=kind, run_ids=run_ids))


def audit_requests(settings: VigilSettings, since: datetime, **match) -> list[AuditEvent]:
    """Audit requests written at or after ``since`` whose fields equal ``match``."""
    since = as_utc(since)
    return [r.event for r in read_all(settings, AUDIT_REQUESTS)
            if isinstance(r.event, AuditEvent) and r.event.produced_at >= since
            and all(getattr(r.event, k) == v for k, v in match.items())]


def sealed(settings: VigilSettings) -> list[AuditEvent]:
    return [r.event for r in read_all(settings, AUDIT) if isinstance(r.event, AuditEvent)]


def settings_env(settings: VigilSettings) -> dict[str, str]:
    """Environment that points a `vigil` process at ``settings``' broker, buckets and collection."""
    return {"VIGIL_KAFKA__BOOTSTRAP": settings.kafka.bootstrap, "VIGIL_MILVUS__COLLECTION": settings.milvus.collection,
            **{f"VIGIL_S3__{name.upper()}": getattr(settings.s3, name) for name in
               ("evidence_bucket", "frames_bucket", "footage_bucket", "watchlist_bucket")},
            "VIGIL_AUDIT__ANCHOR_BUCKET": settings.audit.anchor_bucket}


@contextlib.contextmanager
def sequencer(settings: VigilSettings, log_dir: Path, **env: str) -> Iterator[subprocess.Popen]:
    """`vigil stage audit` as its own process for the block (SIGTERM at the end: it anchors the head then)."""
    full = {**os.environ, **settings_env(settings), "VIGIL_STAGE__HEALTH_PORT": "0", "VIGIL_STAGE__LOG_FORMAT": "text", **env}
    log_path = log_dir / f"audit-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "vigil.cli", "stage", "audit"], env=full, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(60)


def wait_sealed(settings: VigilSettings, event_ids: set[str], timeout_s: float = 60) -> list[AuditEvent]:
    """The sealed log once it holds every one of ``event_ids``."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = sealed(settings)
        if event_ids <= {e.event_id for e in events}:
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"not sealed within {timeout_s:g}s: {sorted(event_ids - {e.event_id for e in events})}")
        time.sleep(0.5)
