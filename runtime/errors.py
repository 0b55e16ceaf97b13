"""How the stream runtime treats an error: retry it, stop the stage, or dead-letter the event.

- **transient**: the network, a timeout, a dependency that is down or overloaded (Milvus unavailable, S3 5xx or
  SlowDown, a retriable Kafka error). The runtime backs off with the stage not-ready, up to
  ``stage.dependency_timeout_s``, then exits with ``ExitCode.UNAVAILABLE``.
- **permanent**: retrying cannot help (wrong S3 keys, a missing bucket, Milvus authentication or privileges, a missing
  collection, Kafka authentication or authorization, an output over the message limit). The stage goes not-ready,
  logs one line naming the cause and exits with ``ExitCode.PERMANENT``, nothing acknowledged.
- **event**: the event itself is at fault (``BadEvent``, a validation error): it is dead-lettered once with the reason.

``classify`` looks at the whole chain (``__cause__``/``__context__``), since storage wrappers (``StorageError``,
``WatchlistUnavailable``) carry the client library's error beneath: a permanent cause anywhere in the chain decides;
otherwise an explicit ``BadEvent`` or validation error; otherwise the innermost error the rules recognise; otherwise
the caller's default.
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass

from pydantic import ValidationError

from runtime.kafka import describe_error as describe


class BadEvent(Exception):
    """The event itself cannot be processed (corrupt image, impossible values): dead-letter it."""


class ExitCode(enum.IntEnum):
    """A stream stage's exit status (sysexits.h values where one fits). Any non-zero one asks the supervisor
    (Kubernetes, ``vigil run``) for a restart; the batch in hand was not acknowledged, so its events come again."""

    UNAVAILABLE = 69  # a dependency (Kafka, S3, Milvus) stayed unavailable past stage.dependency_timeout_s
    INTERNAL = 70  # an unexpected error outside the processor's events (a bug)
    TOPIC_GONE = 75  # a source or output topic vanished (the broker lost its data): a restart recreates it
    PERMANENT = 78  # a permanent dependency error (credentials, privileges, a missing bucket or collection)
    SHUTDOWN_TIMEOUT = 124  # SIGTERM: the batch in hand did not finish within stage.shutdown_grace_s


class Kind(enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    EVENT = "event"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    cause: str  # a short label for logs and the retries metric: "s3:AccessDenied", "milvus:unavailable", "kafka:..."
    detail: str  # one line naming the error
    known: bool = True  # False: no rule knew it, ``kind`` is the caller's default

    @property
    def exit_code(self) -> ExitCode:
        if self.kind is Kind.TRANSIENT:
            return ExitCode.UNAVAILABLE
        return ExitCode.PERMANENT if self.known else ExitCode.INTERNAL


# S3 error codes that retrying cannot fix, and those that say "later".
S3_PERMANENT = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "AllAccessDisabled",
    "AccountProblem", "InvalidBucketName", "InvalidToken", "ExpiredToken",
})
S3_TRANSIENT = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling", "RequestTimeTooSkewed"})

# Milvus: server error codes (2.3+ "merr") and message fragments for the failures retrying cannot fix.
MILVUS_COLLECTION_NOT_FOUND = 100
MILVUS_PERMANENT_CODES = frozenset({MILVUS_COLLECTION_NOT_FOUND, 1400, 1401, 1800})  # not found, not authenticated, not permitted, auth
MILVUS_PERMANENT_TEXT = ("collection not found", "can't find collection", "authenticat", "permission denied",
                         "privilege", "unauthenticated", "incorrect username or password")

KAFKA_PERMANENT = frozenset({
    "AuthenticationFailedError", "SaslAuthenticationFailed", "SaslAuthenticationFailedError", "AuthorizationError",
    "TopicAuthorizationFailedError", "GroupAuthorizationFailedError", "ClusterAuthorizationFailedError",
    "TransactionalIdAuthorizationFailed", "TransactionalIdAuthorizationFailedError", "UnsupportedSaslMechanismError",
    "IllegalSaslStateError", "MessageSizeTooLargeError", "RecordTooLargeError", "RecordListTooLargeError",
})


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from or during, outermost first."""
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 16:
        out.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return out


def _s3(code: str | None, status: int | None) -> tuple[Kind, str] | None:
    if code in S3_PERMANENT:
        return Kind.PERMANENT, f"s3:{code}"
    if code in S3_TRANSIENT or (status is not None and status >= 500):
        return Kind.TRANSIENT, f"s3:{code or status}"
    return None


def _own(exc: BaseException) -> tuple[Kind, str] | None:
    """What this one error says, without its chain; None when no rule knows it."""
    if isinstance(exc, BadEvent):
        return Kind.EVENT, "bad-event"
    if isinstance(exc, ValidationError):
        return Kind.EVENT, "validation"
    module = type(exc).__module__ or ""
    name = type(exc).__name__
    if module.startswith("minio"):
        if name == "S3Error":
            response = getattr(exc, "response", None)
            return _s3(exc.code, getattr(response, "status", None))
        return Kind.TRANSIENT, "s3:unavailable"  # ServerError (5xx without an S3 body), InvalidResponseError
    if module.startswith("storage.objects"):  # StorageError: the S3 code, when the SDK's error is not beneath
        verdict = _s3(getattr(exc, "code", None), None)
        if verdict or not isinstance(exc, ConnectionError):
            return verdict
        return Kind.TRANSIENT, "s3:unavailable"
    if module.startswith("storage.vectors") and name == "WatchlistMissing":
        return Kind.PERMANENT, "milvus:collection-not-found"
    if module.startswith("pymilvus"):
        code = getattr(exc, "code", None)
        text = str(getattr(exc, "message", exc)).lower()
        if code in MILVUS_PERMANENT_CODES or any(fragment in text for fragment in MILVUS_PERMANENT_TEXT):
            what = "collection-not-found" if (code == MILVUS_COLLECTION_NOT_FOUND or "collection" in text) else "auth"
            return Kind.PERMANENT, f"milvus:{what}"
        return Kind.TRANSIENT, "milvus:unavailable"
    if module.startswith(("kafka", "aiokafka")):
        if name in KAFKA_PERMANENT:
            return Kind.PERMANENT, f"kafka:{name}"
        return (Kind.TRANSIENT, f"kafka:{name}") if getattr(exc, "retriable", True) else (Kind.PERMANENT, f"kafka:{name}")
    if module.startswith("grpc"):  # beneath pymilvus's "Fail connecting" when a login is refused
        status = exc.code() if callable(getattr(exc, "code", None)) else None
        if getattr(status, "name", "") in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return Kind.PERMANENT, "milvus:auth"
        return Kind.TRANSIENT, "milvus:unavailable"
    if module.startswith("urllib3"):
        return Kind.TRANSIENT, "http:unavailable"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return Kind.TRANSIENT, "timeout"
    if isinstance(exc, (ConnectionError, OSError)):
        return Kind.TRANSIENT, "network"
    return None


def classify(exc: BaseException, default: Kind = Kind.EVENT) -> Verdict:
    """The verdict on ``exc``: see the module docstring; ``default`` when no rule knows any error in the chain."""
    chain = _chain(exc)
    verdicts = [(e, v) for e in chain if (v := _own(e))]
    for e, (kind, cause) in verdicts:
        if kind is Kind.PERMANENT:
            detail = describe(exc) if e is exc else f"{describe(exc)} (caused by {describe(e)})"
            return Verdict(kind, cause, " ".join(detail.split()))
    if isinstance(exc, (BadEvent, ValidationError)):
        kind, cause = _own(exc)
        return Verdict(kind, cause, describe(exc))
    if verdicts:
        _, (kind, cause) = verdicts[-1]
        return Verdict(kind, cause, describe(exc))
    return Verdict(default, type(exc).__name__, describe(exc), known=False)
