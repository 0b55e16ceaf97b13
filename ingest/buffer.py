"""The bounded queue between a camera's decoder and its publisher, with a named backpressure policy.

``drop_oldest`` (live cameras): a full queue drops its oldest frame to make
room, so a slow publisher costs frames, never latency, and the camera's
socket keeps being read. ``wait`` (recordings): the decoder waits for room,
so nothing in a file is skipped. Every dropped frame is returned to the
caller to be counted.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Policy = Literal["drop_oldest", "wait"]
POLICIES: tuple[Policy, ...] = ("drop_oldest", "wait")


class QueueClosed(Exception):
    """``put`` on a closed queue."""


class FrameQueue(Generic[T]):
    def __init__(self, maxsize: int, policy: Policy):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.maxsize, self.policy = maxsize, policy
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: T) -> T | None:
        """Enqueue ``item``; return the frame dropped to make room (``drop_oldest``), else None.

        Under ``wait`` it blocks while the queue is full; raises ``QueueClosed``
        if the queue is (or gets) closed.
        """
        with self._cond:
            if self.policy == "wait":
                while len(self._items) >= self.maxsize and not self._closed:
                    self._cond.wait()
            if self._closed:
                raise QueueClosed()
            dropped = self._items.popleft() if len(self._items) >= self.maxsize else None
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def get(self, timeout_s: float | None = None) -> T | None:
        """The oldest item; None once the queue is closed and drained (or after ``timeout_s`` with nothing)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout=timeout_s):
                return None
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more puts; ``get`` drains what is left, then returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def drained(self) -> bool:
        """Closed and empty: ``get`` has nothing more to give."""
        with self._cond:
            return self._closed and not self._items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
