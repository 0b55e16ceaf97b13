"""Pure matching logic: threshold decisions and per-(camera, person) alert suppression."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime


def alert_id(face_event_id: str, person_id: str) -> str:
    """Deterministic: a redelivered face gives the same alert id, so consumers can deduplicate."""
    return hashlib.sha256(f"{face_event_id}|{person_id}".encode()).hexdigest()[:32]


@dataclass
class AlertGate:
    """Raises one alert per (run, camera, person) per cooldown window of source time."""

    cooldown_s: float
    _last: dict[tuple, datetime] = field(default_factory=dict)

    def is_open(self, key: tuple, source_ts: datetime) -> bool:
        """True when an alert for ``key`` = (run, camera, person) at ``source_ts`` is not suppressed."""
        last = self._last.get(key)
        return last is None or abs((source_ts - last).total_seconds()) >= self.cooldown_s

    def record(self, key: tuple, source_ts: datetime) -> None:
        """Call once the alert was raised (not before: a retried batch must be able to raise it again)."""
        self._last[key] = source_ts
