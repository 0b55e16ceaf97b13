"""Deployments: authorised uses of the watchlist, limited in cameras, time and persons, read as a table by every stage.

A deployment records its case, purpose, who authorised it, its cameras, the
window of capture times it covers, and its watchlist (the persons who may
match; every entry in force when None). Starting and ending one is audited
with a digest of the watchlist entries in force, then written to the
compacted ``vigil.deployments.v1`` topic, keyed by its id: the latest version
is its state. Stages keep a ``DeploymentTable`` (the topic read to its end at
start, then polled), so a deployment reaches ingest, detect and match, separate
processes, within ``deployments.refresh_s``.

``covers`` is the one rule: a deployment covers an event when it has not
ended, the camera is one of its cameras, the capture time lies in its window,
and the event's run is one the deployment is bound to (``run_ids``; live
traffic, run None, only when it is bound to none).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

from accountability.actors import Actor, require
from accountability.audit import AuditLog
from accountability.topics import deliver, read_all, record_producer
from runtime.kafka import EventReader, ensure_topics
from runtime.settings import VigilSettings
from schemas.events import DeploymentEvent, as_utc, new_id, utc_now
from schemas.topics import DEPLOYMENTS
from storage.vectors import Entry, Watchlist, WatchlistError, epoch_ms

log = logging.getLogger(__name__)

DEPLOYMENT_SCOPE = "deployments"  # the camera_id of deployment records


class DeploymentError(ValueError):
    """A deployment that cannot be started, ended or used as asked; the message says why."""


def covers(deployment: DeploymentEvent, camera_id: str, ts: datetime, run_id: str | None) -> bool:
    """Whether ``deployment`` authorises processing an event of ``camera_id`` captured at ``ts`` in run ``run_id``."""
    return (deployment.ended_at is None
            and camera_id in deployment.cameras
            and deployment.starts_at <= as_utc(ts) < deployment.ends_at
            and (run_id in deployment.run_ids if deployment.run_ids else run_id is None))


def may_match(deployment: DeploymentEvent, person_id: str) -> bool:
    return deployment.persons is None or person_id in deployment.persons


def persons_of(deployments: Iterable[DeploymentEvent]) -> list[str] | None:
    """The persons any of ``deployments`` lets match (None: everyone in force)."""
    persons: set[str] = set()
    for deployment in deployments:
        if deployment.persons is None:
            return None
        persons.update(deployment.persons)
    return sorted(persons)


def watchlist_digest(entries: Iterable[Entry], persons: list[str] | None, at: datetime | None = None) -> tuple[str, int]:
    """SHA-256 over the entries in force at ``at`` (of ``persons``, when given), and how many there are."""
    now_ms = epoch_ms(at)
    lines = sorted(f"{e.id}\t{e.person_id}\t{e.photo_key}\t{e.expires_at}" for e in entries
                   if e.expires_at > now_ms and (persons is None or e.person_id in persons))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), len(lines)


@dataclass(frozen=True)
class DeploymentRequest:
    """What an authoriser asks for; ``Deployments.start`` checks it."""

    case: str
    purpose: str
    cameras: list[str]
    ends_at: datetime
    starts_at: datetime | None = None  # None: now
    persons: list[str] | None = None
    kind: str = "live"
    run_ids: tuple[str, ...] = ()


class Deployments:
    """Start, end, bind and list deployments: the one code path of the CLI and the console."""

    def __init__(self, settings: VigilSettings, *, audit: AuditLog | None = None):
        self.settings = settings
        self._own_audit = audit is None
        self.audit = audit or AuditLog(settings)
        self.producer = record_producer(settings, "vigil-deployments")

    def close(self) -> None:
        self.producer.close()
        if self._own_audit:
            self.audit.close()

    def __enter__(self) -> Deployments:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _digest(self, persons: list[str] | None) -> tuple[str, int]:
        with Watchlist(self.settings.milvus) as watchlist:
            watchlist.ensure_collection()
            return watchlist_digest(watchlist.entries(), persons)

    def start(self, actor: Actor, request: DeploymentRequest) -> DeploymentEvent:
        """Authorise a use (role ``authoriser``); audited (``deployment_start``) before it exists."""
        require(actor, "authoriser")
        now = utc_now()
        starts_at = as_utc(request.starts_at) if request.starts_at else now
        ends_at = as_utc(request.ends_at)
        cameras = sorted(set(request.cameras))
        if not request.case.strip() or not request.purpose.strip():
            raise DeploymentError("a deployment needs a case (or reference) and a purpose")
        if not cameras:
            raise DeploymentError("a deployment covers named cameras: give at least one")
        if not starts_at < ends_at:
            raise DeploymentError(f"the window must start before it ends (got {starts_at.isoformat()} to {ends_at.isoformat()})")
        if request.kind == "retrospective" and not request.persons:
            raise DeploymentError("a retrospective deployment must name the persons searched for")
        if request.kind == "retrospective" and ends_at > now:
            raise DeploymentError("a retrospective deployment covers recorded footage: its window must end in the past")
        if request.kind == "live" and ends_at <= now:
            raise DeploymentError("a live deployment's window must end in the future")
        digest, entries = self._digest(request.persons)
        deployment = DeploymentEvent(
            camera_id=DEPLOYMENT_SCOPE, source_ts=now, trace_id=new_id(), deployment_id=f"dep-{now:%Y%m%d}-{new_id()[:8]}",
            case=request.case, purpose=request.purpose, authorised_by=actor.name, kind=request.kind, cameras=cameras,
            starts_at=starts_at, ends_at=ends_at, persons=sorted(set(request.persons)) if request.persons is not None else None,
            run_ids=list(request.run_ids), watchlist_digest=digest,
        )
        self.audit.append(actor, "deployment_start", deployment.deployment_id, request.purpose, {
            "case": deployment.case, "kind": deployment.kind, "cameras": cameras, "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(), "persons": deployment.persons, "run_ids": deployment.run_ids,
            "watchlist_digest": digest, "watchlist_entries": entries,
        }, deployment_id=deployment.deployment_id)
        self._write(deployment)
        return deployment

    def end(self, actor: Actor, deployment_id: str, reason: str) -> DeploymentEvent:
        """End a deployment now (role ``authoriser``); audited (``deployment_end``) with the watchlist digest at its end."""
        require(actor, "authoriser")
        if not reason.strip():
            raise DeploymentError("ending a deployment needs a reason")
        current = self.get(deployment_id)
        if current.ended_at is not None:
            raise DeploymentError(f"deployment {deployment_id} already ended at {current.ended_at.isoformat()}")
        try:
            digest, entries = self._digest(current.persons)
        except WatchlistError as exc:  # Milvus away: the end must not wait for it; the audit says the digest is unknown
            log.warning("deployment %s ends without its watchlist digest: %s", deployment_id, exc)
            digest, entries = None, None
        now = utc_now()
        ended = current.model_copy(update={"source_ts": now, "produced_at": now, "event_id": new_id(),
                                           "ended_at": now, "ended_by": actor.name, "end_reason": reason})
        self.audit.append(actor, "deployment_end", deployment_id, reason, {
            "case": current.case, "watchlist_digest": digest, "watchlist_entries": entries,
            "started_digest": current.watchlist_digest,
        }, deployment_id=deployment_id)
        self._write(ended)
        return ended

    def bind_run(self, deployment_id: str, run_id: str) -> DeploymentEvent:
        """Bind a run (a replay) to a deployment, so its events are covered; the caller audits the use."""
        current = self.get(deployment_id)
        now = utc_now()
        bound = current.model_copy(update={"source_ts": now, "produced_at": now, "event_id": new_id(),
                                           "run_ids": [*current.run_ids, run_id]})
        self._write(bound)
        return bound

    def get(self, deployment_id: str) -> DeploymentEvent:
        found = {d.deployment_id: d for d in self.list()}
        if deployment_id not in found:
            raise DeploymentError(f"no deployment {deployment_id!r}")
        return found[deployment_id]

    def list(self, *, active_at: datetime | None = None) -> list[DeploymentEvent]:
        """Every deployment's latest version, oldest first; with ``active_at``, those not ended whose window holds it."""
        return list_deployments(self.settings, active_at=active_at)

    def _write(self, deployment: DeploymentEvent) -> None:
        deliver(self.producer, DEPLOYMENTS, deployment, self.settings.audit.deliver_timeout_s)


def latest(records) -> dict[str, DeploymentEvent]:
    table: dict[str, DeploymentEvent] = {}
    for record in records:
        if isinstance(record.event, DeploymentEvent):
            table[record.event.deployment_id] = record.event
    return table


def list_deployments(settings: VigilSettings, *, active_at: datetime | None = None) -> list[DeploymentEvent]:
    found = sorted(latest(read_all(settings, DEPLOYMENTS)).values(), key=lambda d: (d.starts_at, d.deployment_id))
    if active_at is not None:
        at = as_utc(active_at)
        found = [d for d in found if d.ended_at is None and d.starts_at <= at < d.ends_at]
    return found


class DeploymentTable:
    """The deployments as a stage sees them: read to the end at ``start``, then kept current by a thread."""

    def __init__(self, settings: VigilSettings):
        self.settings = settings
        self.deployments: dict[str, DeploymentEvent] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> DeploymentTable:
        ensure_topics(self.settings.kafka, [DEPLOYMENTS])
        self._reader = EventReader(self.settings.kafka, DEPLOYMENTS)
        self._apply(self._reader.read_to_end())  # one partition: read order is offset order
        self._thread = threading.Thread(target=self._follow, name="deployments", daemon=True)
        self._thread.start()
        return self

    def _apply(self, batch) -> None:
        if batch:
            self.deployments = {**self.deployments, **latest(batch)}  # replaced whole: readers see one version or the next

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._apply(self._reader.read(timeout_s=self.settings.deployments.refresh_s))
            except Exception as exc:  # noqa: BLE001 - keep the last table and try again
                log.warning("deployments table not refreshed: %s", exc)
                time.sleep(1.0)

    def covering(self, camera_id: str, ts: datetime, run_id: str | None) -> list[DeploymentEvent]:
        """The deployments that cover this event, oldest first."""
        found = [d for d in self.deployments.values() if covers(d, camera_id, ts, run_id)]
        return sorted(found, key=lambda d: (d.starts_at, d.deployment_id))

    def run_over(self, run_id: str) -> bool:
        """Whether run ``run_id`` had deployments and every one of them has ended (the run is over: no face of it will come)."""
        bound = [d for d in self.deployments.values() if run_id in d.run_ids]
        return bool(bound) and all(d.ended_at is not None for d in bound)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if getattr(self, "_reader", None) is not None:
            self._reader.close()


def run_window(settings: VigilSettings) -> timedelta:
    return timedelta(hours=settings.deployments.run_window_h)
