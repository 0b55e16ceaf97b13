"""Alert review with two-person confirmation, its state derived from the reviews topic.

``ReviewBook`` is the rule, pure: an alert is *confirmed* by the first
``console.confirmations`` (at least two) confirmations by different reviewers
before any rejection, and *rejected* (closed) by the first rejection. It folds
``ReviewDecisionEvent``s idempotently (by event id), in topic order, so the state
after a restart is the state before it. ``ReviewDesk`` feeds it from the alerts,
reviews and confirmed topics, writes decisions (audited first, fail-closed), and
publishes each confirmed alert to ``vigil.confirmed.v1`` once (republishing any
a crash left unpublished when it starts).

One console writes decisions at a time (the Deployment runs one replica): the
refusal checks and the write are serialised by a lock in this process.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Literal

from accountability.actors import Actor
from runtime.kafka import EventProducer, EventReader, ensure_topics
from runtime.settings import VigilSettings
from schemas.events import AlertEvent, ConfirmedAlertEvent, ReviewDecisionEvent
from schemas.topics import ALERTS, AUDIT_REQUESTS, CONFIRMED, REVIEWS

log = logging.getLogger(__name__)

Status = Literal["open", "confirmed", "rejected"]
SEND_TIMEOUT_S = 15.0


class Refused(Exception):
    """A decision the rules refuse; ``status`` is the HTTP status that says so."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Review:
    alert_id: str
    required: int
    alert: AlertEvent | None = None  # None until the alert itself has been read
    confirmations: list[ReviewDecisionEvent] = field(default_factory=list)
    rejection: ReviewDecisionEvent | None = None
    published: bool = False  # its ConfirmedAlertEvent is on the confirmed topic

    @property
    def status(self) -> Status:
        if self.rejection is not None:
            return "rejected"
        return "confirmed" if len(self.confirmations) >= self.required else "open"

    @property
    def confirmed_by(self) -> list[str]:
        return [d.reviewer for d in self.confirmations]


class ReviewBook:
    """Review state per alert, folded from alerts and decisions in any interleaving."""

    def __init__(self, required: int):
        if required < 2:
            raise ValueError("an alert needs at least two confirmations")
        self.required = required
        self.reviews: dict[str, Review] = {}
        self._seen: set[str] = set()

    def _review(self, alert_id: str) -> Review:
        return self.reviews.setdefault(alert_id, Review(alert_id, self.required))

    def add_alert(self, alert: AlertEvent) -> None:
        review = self._review(alert.alert_id)
        review.alert = review.alert or alert  # a redelivered alert has the same id and content

    def apply(self, decision: ReviewDecisionEvent) -> bool:
        """Fold one decision; False when it changes nothing (a repeat, or a decision on a closed alert)."""
        if decision.event_id in self._seen:
            return False
        self._seen.add(decision.event_id)
        review = self._review(decision.alert_id)
        if review.status != "open":
            return False
        if decision.decision == "reject":
            review.rejection = decision
            return True
        if decision.reviewer in review.confirmed_by:
            return False
        review.confirmations.append(decision)
        return True

    def mark_published(self, alert_id: str) -> None:
        self._review(alert_id).published = True

    def refusal(self, alert_id: str, reviewer: str) -> Refused | None:
        """Why ``reviewer`` may not decide on ``alert_id`` now; None when they may."""
        review = self.reviews.get(alert_id)
        if review is None or review.alert is None:
            return Refused(404, f"no alert {alert_id}")
        if review.status != "open":
            return Refused(409, f"alert {alert_id} is already {review.status}")
        if reviewer in review.confirmed_by:
            return Refused(409, f"{reviewer} has already confirmed alert {alert_id}; a second reviewer must confirm it")
        return None

    def unpublished(self) -> list[Review]:
        return [r for r in self.reviews.values() if r.status == "confirmed" and not r.published and r.alert is not None]


def confirmed_event(review: Review) -> ConfirmedAlertEvent:
    alert = review.alert
    return ConfirmedAlertEvent(**alert.lineage(), event_id=f"{alert.alert_id}-confirmed", alert=alert,
                               confirmed_by=review.confirmed_by, decision_event_ids=[d.event_id for d in review.confirmations])


Audit = Callable[..., object]  # console.actions.Actions.audit: raises when the record is not written


class ReviewDesk:
    """The console's view of the alerts, and the only writer of decisions and confirmed alerts."""

    def __init__(self, settings: VigilSettings, audit: Audit):
        self.settings = settings
        self.audit = audit
        self.book = ReviewBook(settings.console.confirmations)
        self.lock = threading.RLock()
        self.caught_up = threading.Event()
        self.error: str | None = None
        self._stop = threading.Event()
        self._producer: EventProducer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="review-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self._producer:
            self._producer.close(timeout_s=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:  # the broker went away: say so on /readyz, retry
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("review feed failed, retrying: %s", self.error)
                self._stop.wait(2.0)

    def _follow(self) -> None:
        ensure_topics(self.settings.kafka, [ALERTS, REVIEWS, CONFIRMED, AUDIT_REQUESTS])
        self._producer = self._producer or EventProducer(self.settings.kafka, client_id="vigil-console")
        readers = [EventReader(self.settings.kafka, spec) for spec in (REVIEWS, CONFIRMED, ALERTS)]
        try:
            while not self._stop.is_set():
                got = False
                for reader in readers:
                    batch = reader.read(timeout_s=0.2)
                    got |= bool(batch)
                    with self.lock:
                        for read in batch:
                            self._fold(read.event)
                if not self.caught_up.is_set() and not got and all(r.at_end() for r in readers):
                    with self.lock:
                        for review in self.book.unpublished():  # a crash between the second confirmation and its event
                            self._publish(review)
                    self.caught_up.set()
                    log.info("review state caught up: %d alerts", len(self.book.reviews))
                self.error = None
        finally:
            for reader in readers:
                reader.close()

    def _fold(self, event) -> None:
        if isinstance(event, AlertEvent):
            self.book.add_alert(event)
        elif isinstance(event, ReviewDecisionEvent):
            self.book.apply(event)
        elif isinstance(event, ConfirmedAlertEvent):
            self.book.mark_published(event.alert.alert_id)

    def wait_ready(self, timeout_s: float) -> bool:
        return self.caught_up.wait(timeout_s)

    def alerts(self, status: Status | None = None) -> list[Review]:
        with self.lock:
            reviews = [r for r in self.book.reviews.values() if r.alert is not None and (status is None or r.status == status)]
        return sorted(reviews, key=lambda r: r.alert.source_ts, reverse=True)

    def get(self, alert_id: str) -> Review:
        with self.lock:
            review = self.book.reviews.get(alert_id)
        if review is None or review.alert is None:
            raise Refused(404, f"no alert {alert_id}")
        return review

    def decide(self, alert_id: str, reviewer: Actor, decision: Literal["confirm", "reject"], note: str | None) -> Review:
        """Record ``reviewer``'s decision: audited, then written to the reviews topic, then folded; publish on confirmation."""
        if not self.caught_up.is_set():
            raise Refused(503, "review state is still being read from the reviews topic; try again shortly")
        with self.lock:
            refusal = self.book.refusal(alert_id, reviewer.name)
            if refusal:
                raise refusal
            review = self.book.reviews[alert_id]
            alert = review.alert
            event = ReviewDecisionEvent(**alert.lineage(), alert_id=alert_id, person_id=alert.person_id, decision=decision,
                                        reviewer=reviewer.name, note=note or None)
            self.audit(reviewer, "review", alert.person_id, f"alert review: {decision}",
                       {"alert_id": alert_id, "decision": decision, "decision_event_id": event.event_id,
                        "camera_id": alert.camera_id, "note": note or ""}, deployment_id=alert.deployment_id)
            self._producer.send(REVIEWS, event).get(timeout=SEND_TIMEOUT_S)
            self.book.apply(event)
            if review.status == "confirmed":
                self._publish(review)
            return review

    def _publish(self, review: Review) -> None:
        self._producer.send(CONFIRMED, confirmed_event(review)).get(timeout=SEND_TIMEOUT_S)
        self.book.mark_published(review.alert_id)
        log.info("alert %s confirmed by %s", review.alert_id, ", ".join(review.confirmed_by))

