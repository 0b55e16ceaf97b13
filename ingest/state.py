"""A camera's life as an explicit state machine, and the reconnect backoff.

::

    connecting ──► streaming ──► ended            (a recording ran to its end, or stop)
        │  ▲          │  └─────► failed           (a recording was damaged or unreadable)
        │  │          ▼
        │  └─── reconnecting ──► ended | failed   (stop | reconnect attempts exhausted)
        └──────────► reconnecting | ended | failed

Only live sources reconnect. ``ended`` and ``failed`` are final. Every change
is recorded with its time; an *outage* runs from the moment a camera that was
streaming leaves ``streaming`` until it streams again.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class CameraState(StrEnum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (CameraState.ENDED, CameraState.FAILED)


S = CameraState
TRANSITIONS: dict[CameraState, frozenset[CameraState]] = {
    S.CONNECTING: frozenset({S.STREAMING, S.RECONNECTING, S.ENDED, S.FAILED}),
    S.STREAMING: frozenset({S.RECONNECTING, S.ENDED, S.FAILED}),
    S.RECONNECTING: frozenset({S.CONNECTING, S.ENDED, S.FAILED}),
    S.ENDED: frozenset(),
    S.FAILED: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


@dataclass(frozen=True)
class Outage:
    started: float  # wall-clock (time.time())
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class StateMachine:
    """The current state, when it was entered, and the outages so far. Thread-safe."""

    on_change: Callable[[CameraState, CameraState], None] | None = None
    state: CameraState = CameraState.CONNECTING
    since: float = field(default_factory=time.time)  # wall-clock time the current state was entered
    history: list[tuple[float, CameraState]] = field(default_factory=list)  # the last few (time, state)
    outages: list[Outage] = field(default_factory=list)  # finished outages, oldest first
    _outage_start: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    max_history = 50

    def __post_init__(self) -> None:
        self.history.append((self.since, self.state))

    def to(self, new: CameraState) -> bool:
        """Move to ``new``; False when already there. Raises ``InvalidTransition`` for a move the diagram forbids."""
        with self._lock:
            old = self.state
            if new == old:
                return False
            if new not in TRANSITIONS[old]:
                raise InvalidTransition(f"camera state {old} cannot become {new}")
            now = time.time()
            if old == S.STREAMING and new == S.RECONNECTING:
                self._outage_start = now
            elif new == S.STREAMING and self._outage_start is not None:
                self.outages.append(Outage(self._outage_start, now))
                self._outage_start = None
            self.state, self.since = new, now
            self.history.append((now, new))
            del self.history[:-self.max_history]
        if self.on_change is not None:
            self.on_change(old, new)
        return True

    @property
    def outage_count(self) -> int:
        """Outages so far, the current one included."""
        with self._lock:
            return len(self.outages) + (self._outage_start is not None)

    @property
    def outage_s(self) -> float:
        """Seconds spent in outages, the current one included."""
        with self._lock:
            ongoing = time.time() - self._outage_start if self._outage_start is not None and not self.state.final else 0.0
            return sum(o.seconds for o in self.outages) + ongoing


@dataclass
class Backoff:
    """Capped exponential backoff with jitter.

    Attempt ``n`` (0-based) waits a delay drawn uniformly from
    ``[bound * (1 - jitter), bound]`` where ``bound = min(max_s, initial_s * 2**n)``:
    the wait never exceeds its bound, and cameras that lost the same server
    do not all come back at the same instant.
    """

    initial_s: float
    max_s: float
    jitter: float = 0.2
    max_attempts: int | None = None  # None: retry forever
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def bound(self, attempt: int | None = None) -> float:
        n = self.attempt if attempt is None else attempt
        return min(self.max_s, self.initial_s * 2 ** min(n, 62))

    def next_delay(self) -> float:
        bound = self.bound()
        self.attempt += 1
        return bound * (1 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self.attempt = 0

    @property
    def exhausted(self) -> bool:
        return self.max_attempts is not None and self.attempt >= self.max_attempts
