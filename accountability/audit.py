"""The audit log: fail-closed appends, a hash chain sealed by one sequencer, verification and search.

Writers (the CLI, the console, the stages' retention) append *requests* to
``vigil.audit-requests.v1`` and wait for every in-sync replica to acknowledge
them (``AuditLog.append``); the action happens only after that, so an action
whose record cannot be written does not happen. One sequencer
(``accountability.sequencer``, the ``audit`` stage) reads the requests in their
total order (one partition) and writes each to ``vigil.audit.v1`` with the
next ``seq``, the ``hash`` of the previous sealed event (``prev_hash``) and its
own ``hash``; it alone writes there. Concurrent writers cannot fork the chain:
none of them computes it.

``walk`` checks a sealed log: each event's hash over its content, each link,
each sequence number, and that a request with the same content exists (so an
event written to the sealed topic directly, with a well-formed link or not, is
named). ``verify`` adds the anchors the sequencer writes to S3 under Object
Lock: a log rewritten from the start no longer matches them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from accountability.actors import Actor
from accountability.topics import NotRecorded, deliver, read_all, record_producer
from runtime.kafka import ReadEvent
from runtime.settings import VigilSettings
from schemas.events import AuditEvent, as_utc, new_id, utc_now
from schemas.topics import AUDIT, AUDIT_REQUESTS
from storage.objects import ObjectStore, StorageError

log = logging.getLogger(__name__)

GENESIS = "0" * 64
AUDIT_SCOPE = "audit"  # the camera_id (message key) of every audit event
ANCHOR_PREFIX = "anchors/"
CHAIN_FIELDS = {"seq", "prev_hash", "hash"}


class AuditUnavailable(NotRecorded):
    """The audit request was not acknowledged: the action it records must not happen."""


# ------------------------------------------------------------------------------------------- the chain

def _canonical(event: AuditEvent, exclude: set[str]) -> bytes:
    return json.dumps(event.model_dump(mode="json", exclude=exclude), sort_keys=True, separators=(",", ":")).encode()


def event_hash(event: AuditEvent) -> str:
    """SHA-256 of the event's canonical JSON (sorted keys, no spaces) without ``hash``: seq and prev_hash included."""
    return hashlib.sha256(_canonical(event, {"hash"})).hexdigest()


def request_digest(event: AuditEvent) -> str:
    """SHA-256 of what the writer wrote: the canonical JSON without the chain fields."""
    return hashlib.sha256(_canonical(event, CHAIN_FIELDS)).hexdigest()


def seal(request: AuditEvent, seq: int, prev_hash: str) -> AuditEvent:
    """The request as the ``seq``-th event of the chain, linked to ``prev_hash``."""
    linked = request.model_copy(update={"seq": seq, "prev_hash": prev_hash, "hash": None})
    return linked.model_copy(update={"hash": event_hash(linked)})


@dataclass(frozen=True)
class Break:
    """Where the chain breaks: the record, and why."""

    offset: int
    event_id: str | None
    seq: int | None
    why: str

    def __str__(self) -> str:
        return f"offset {self.offset} (seq {self.seq}, event {self.event_id}): {self.why}"


@dataclass
class ChainReport:
    events: int = 0  # sealed events that verify
    head: AuditEvent | None = None  # the last of them
    breaks: list[Break] = field(default_factory=list)
    sealed_ids: set[str] = field(default_factory=set)
    hashes: dict[int, str] = field(default_factory=dict)  # seq -> hash of the events that verify
    pending: int = 0  # requests not sealed yet
    anchors: int = 0  # anchors checked
    anchor_note: str = ""

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def next_seq(self) -> int:
        return self.head.seq + 1 if self.head else 1

    @property
    def head_hash(self) -> str:
        return self.head.hash if self.head else GENESIS


def walk(sealed: list[ReadEvent], requests: dict[str, str] | None) -> ChainReport:
    """Check a sealed log in offset order. ``requests``: event id -> ``request_digest`` of every request (None: not checked).

    An event that does not verify is reported and skipped: the chain goes on from the last one that did,
    as the sequencer does, so every later break is named too.
    """
    report = ChainReport()
    for record in sealed:
        event = record.event
        why = _why_broken(event, record, report, requests)
        if why:
            report.breaks.append(Break(record.offset, getattr(event, "event_id", None), getattr(event, "seq", None), why))
            continue
        report.head = event
        report.events += 1
        report.sealed_ids.add(event.event_id)
        report.hashes[event.seq] = event.hash
    if requests is not None:
        report.pending = len(set(requests) - report.sealed_ids)
    return report


def _why_broken(event, record: ReadEvent, report: ChainReport, requests: dict[str, str] | None) -> str | None:
    if not isinstance(event, AuditEvent):
        return f"not an audit event ({record.error})"
    if event.seq is None or event.prev_hash is None or event.hash is None:
        return "an unsealed event in the sealed log"
    if event.hash != event_hash(event):
        return "its hash does not match its content: the event was altered"
    if event.seq != report.next_seq:
        return f"seq {event.seq} where {report.next_seq} was due"
    if event.prev_hash != report.head_hash:
        return "prev_hash is not the hash of the event before it"
    if event.event_id in report.sealed_ids:
        return "a second copy of an event already in the chain"
    if requests is not None and requests.get(event.event_id) != request_digest(event):
        return "no audit request has this content: the event was written to the sealed log directly"
    return None


def request_digests(settings: VigilSettings) -> dict[str, str]:
    return {r.event.event_id: request_digest(r.event) for r in read_all(settings, AUDIT_REQUESTS)
            if isinstance(r.event, AuditEvent)}


def chain_state(settings: VigilSettings) -> ChainReport:
    """The sealed log walked against the requests (what the sequencer continues from, and what ``verify`` starts with)."""
    return walk(read_all(settings, AUDIT), request_digests(settings))


# ------------------------------------------------------------------------------------------- anchors

def anchor_key(seq: int) -> str:
    return f"{ANCHOR_PREFIX}{seq:012d}.json"


def write_anchor(store: ObjectStore, settings: VigilSettings, head: AuditEvent) -> str:
    """Write the chain head to the anchor bucket under Object Lock (COMPLIANCE) for ``audit.anchor_lock_days``."""
    bucket = settings.audit.anchor_bucket
    store.ensure_locked_bucket(bucket)
    body = json.dumps({"seq": head.seq, "hash": head.hash, "event_id": head.event_id,
                       "anchored_at": utc_now().isoformat()}).encode()
    until = datetime.now(timezone.utc) + timedelta(days=settings.audit.anchor_lock_days)
    key = anchor_key(head.seq)
    store.put_bytes(bucket, key, body, "application/json", retain_until=until)
    return key


def check_anchors(store: ObjectStore, settings: VigilSettings, report: ChainReport) -> None:
    """Every anchor version must name a (seq, hash) of the verified chain; a mismatch is a break."""
    bucket = settings.audit.anchor_bucket
    try:
        versions = store.versions(bucket, ANCHOR_PREFIX)
    except StorageError as exc:
        report.anchor_note = f"anchors not checked: {exc}"
        return
    for key, version in versions:
        anchor = json.loads(store.get_bytes(bucket, key, version_id=version))
        report.anchors += 1
        if report.hashes.get(anchor["seq"]) != anchor["hash"]:
            report.breaks.append(Break(-1, anchor.get("event_id"), anchor["seq"],
                                       f"the anchor s3://{bucket}/{key} holds another hash for this seq: the log was "
                                       f"rewritten, or lost and begun again"))
    if not versions:
        report.anchor_note = "no anchor yet (the sequencer anchors every audit.anchor_interval_s)"


def verify(settings: VigilSettings) -> ChainReport:
    """Walk the sealed log against the requests and the anchors; ``report.breaks[0]`` is the first break."""
    report = chain_state(settings)
    check_anchors(ObjectStore(settings.s3), settings, report)
    return report


# ------------------------------------------------------------------------------------------- writing and reading

class AuditLog:
    """Appends audit requests and waits for them to be acknowledged (fail closed)."""

    def __init__(self, settings: VigilSettings, *, client_id: str = "vigil-audit"):
        self.timeout_s = settings.audit.deliver_timeout_s
        try:
            self.producer = record_producer(settings, client_id)
        except NotRecorded as exc:
            raise AuditUnavailable(f"the audit log cannot be written: {exc}") from exc

    def append(self, actor: Actor, action: str, subject: str, reason: str, details: dict | None = None, *,
               deployment_id: str | None = None) -> AuditEvent:
        """Record that ``actor`` does ``action``; returns once every in-sync replica holds it, else raises ``AuditUnavailable``."""
        now = utc_now()
        event_id = new_id()
        event = AuditEvent(event_id=event_id, camera_id=AUDIT_SCOPE, source_ts=now, trace_id=event_id, produced_at=now,
                           actor=actor.name, action=action, subject=subject, reason=reason,
                           details={**(details or {}), "via": actor.via}, deployment_id=deployment_id)
        try:
            deliver(self.producer, AUDIT_REQUESTS, event, self.timeout_s)
        except NotRecorded as exc:
            raise AuditUnavailable(f"audit event {action} for {subject} not written, so not done: {exc}") from exc
        return event

    def close(self) -> None:
        # A request that timed out may still sit in the buffer: drop it rather than deliver it late.
        self.producer.close(timeout_s=0)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class AuditFilter:
    person: str | None = None  # the subject
    actor: str | None = None
    action: str | None = None
    deployment: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __call__(self, event: AuditEvent) -> bool:
        return ((self.person is None or event.subject == self.person)
                and (self.actor is None or event.actor == self.actor)
                and (self.action is None or event.action == self.action)
                and (self.deployment is None or event.deployment_id == self.deployment)
                and (self.since is None or event.produced_at >= as_utc(self.since))
                and (self.until is None or event.produced_at <= as_utc(self.until)))


def show(settings: VigilSettings, where: AuditFilter = AuditFilter(), *, pending: bool = True) -> list[AuditEvent]:
    """Sealed events that match ``where``, in chain order; with ``pending``, then the requests not sealed yet (seq None)."""
    sealed = [r.event for r in read_all(settings, AUDIT) if isinstance(r.event, AuditEvent)]
    found = [e for e in sealed if where(e)]
    if pending:
        ids = {e.event_id for e in sealed}
        found += [r.event for r in read_all(settings, AUDIT_REQUESTS)
                  if isinstance(r.event, AuditEvent) and r.event.event_id not in ids and where(r.event)]
    return found
