"""The console's one door to the accountability code: the same audit, watchlist and deployment functions the CLI calls.

Every call names the authenticated console user as the ``Actor``. An audit
event that cannot be written raises ``AuditUnavailable``, and the action it
records does not happen. The clients (audit producer, deployments producer,
the enroller with its models) are made on first use and shared.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

from accountability.actors import Actor
from accountability.audit import AuditFilter, AuditLog, ChainReport, show, verify
from accountability.deployments import DeploymentRequest, Deployments
from accountability.watchlist import Erasure, remove_person
from console.users import User
from runtime.settings import VigilSettings
from schemas.events import AuditEvent, DeploymentEvent


def actor_of(user: User) -> Actor:
    return Actor(user.name, "console", frozenset(role.value for role in user.roles))


class Actions:
    def __init__(self, settings: VigilSettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._audit: AuditLog | None = None
        self._deployments: Deployments | None = None
        self._enroller = None

    @property
    def audit_log(self) -> AuditLog:
        with self._lock:
            self._audit = self._audit or AuditLog(self.settings, client_id="vigil-console")
            return self._audit

    def audit(self, actor: Actor, action: str, subject: str, reason: str, details: dict | None = None, *,
              deployment_id: str | None = None) -> AuditEvent:
        """Record ``action`` before it happens; raises when the record is not acknowledged."""
        return self.audit_log.append(actor, action, subject, reason, details, deployment_id=deployment_id)

    def audit_events(self, where: AuditFilter) -> list[AuditEvent]:
        return show(self.settings, where)

    def verify_audit(self) -> ChainReport:
        return verify(self.settings)

    # ------------------------------------------------------------ deployments

    @property
    def deployments(self) -> Deployments:
        audit = self.audit_log  # takes the lock itself
        with self._lock:
            self._deployments = self._deployments or Deployments(self.settings, audit=audit)
            return self._deployments

    def list_deployments(self) -> list[DeploymentEvent]:
        return self.deployments.list()

    def start_deployment(self, actor: Actor, request: DeploymentRequest) -> DeploymentEvent:
        return self.deployments.start(actor, request)

    def end_deployment(self, actor: Actor, deployment_id: str, reason: str) -> DeploymentEvent:
        return self.deployments.end(actor, deployment_id, reason)

    # ------------------------------------------------------------ watchlist

    def enrol(self, actor: Actor, person_id: str, photos: list[Path], *, reason: str, expires_at: datetime, source: str | None,
              approval: dict | None = None):
        from vigil.enroll import Enroller  # the models load on the first enrolment only

        audit = self.audit_log
        with self._lock:
            self._enroller = self._enroller or Enroller(self.settings, audit=audit)
        return self._enroller.enroll(person_id, photos, actor=actor, reason=reason, expires_at=expires_at, source=source,
                                     approval=approval)

    def remove(self, actor: Actor, person_id: str, reason: str) -> Erasure:
        return remove_person(self.settings, actor, person_id, reason, audit=self.audit_log)

    def close(self) -> None:
        for client in (self._enroller, self._deployments, self._audit):
            if client is not None:
                client.close()
