"""The console's one door to the accountability code: audit, watchlist and deployment actions, as the CLI does them.

Every function takes the authenticated user as ``actor``. An audit event that
cannot be written raises, so the action it records does not happen.
"""

from __future__ import annotations

from datetime import datetime

from runtime.kafka import EventProducer, EventReader
from runtime.settings import VigilSettings
from schemas.events import AuditEvent, utc_now
from schemas.topics import AUDIT

AUDIT_SCOPE = "console"  # camera_id of the console's audit events
SEND_TIMEOUT_S = 15.0


class Actions:
    def __init__(self, settings: VigilSettings):
        self.settings = settings
        self._producer: EventProducer | None = None

    def audit(self, *, actor: str, action: str, subject: str, reason: str, details: dict) -> None:
        """Write one audit event and wait until the broker has it."""
        self._producer = self._producer or EventProducer(self.settings.kafka, client_id="vigil-console-audit")
        now = utc_now()
        event = AuditEvent(camera_id=AUDIT_SCOPE, source_ts=now, trace_id=f"audit-{now.timestamp():.6f}",
                           actor=actor, action=action, subject=subject, reason=reason, details=details)
        self._producer.send(AUDIT, event).get(timeout=SEND_TIMEOUT_S)

    def audit_log(self, *, person: str | None = None, actor: str | None = None, action: str | None = None,
                  since: datetime | None = None, until: datetime | None = None) -> list[AuditEvent]:
        """The audit events that match every filter given, oldest first."""
        events = []
        with EventReader(self.settings.kafka, AUDIT) as reader:
            while True:
                batch = reader.read(timeout_s=0.5)
                events += [r.event for r in batch if isinstance(r.event, AuditEvent)]
                if not batch and reader.at_end():
                    break
        return [e for e in events
                if (person is None or e.subject == person) and (actor is None or e.actor == actor)
                and (action is None or e.action == action)
                and (since is None or e.produced_at >= since) and (until is None or e.produced_at < until)]

    def close(self) -> None:
        if self._producer:
            self._producer.close(timeout_s=5)
