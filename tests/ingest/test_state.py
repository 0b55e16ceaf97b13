"""The camera state machine, the reconnect backoff and the backpressure queue (pure logic, no services)."""

from __future__ import annotations

import random
import threading
import time

import pytest

from ingest.buffer import FrameQueue, QueueClosed
from ingest.state import Backoff, CameraState, InvalidTransition, StateMachine

S = CameraState


def test_live_camera_life_and_outages():
    changes = []
    machine = StateMachine(on_change=lambda old, new: changes.append((old, new)))
    assert machine.state == S.CONNECTING
    machine.to(S.STREAMING)
    machine.to(S.RECONNECTING)
    assert machine.outage_count == 1 and machine.outage_s > 0
    time.sleep(0.05)
    machine.to(S.CONNECTING)
    machine.to(S.RECONNECTING)  # the server is still down
    machine.to(S.CONNECTING)
    assert not machine.to(S.CONNECTING)  # no change, no callback
    machine.to(S.STREAMING)
    assert len(machine.outages) == 1 and machine.outages[0].seconds >= 0.05
    machine.to(S.ENDED)
    assert changes[0] == (S.CONNECTING, S.STREAMING) and changes[-1] == (S.STREAMING, S.ENDED)
    assert [state for _, state in machine.history][-2:] == [S.STREAMING, S.ENDED]
    with pytest.raises(InvalidTransition):
        machine.to(S.STREAMING)  # final


@pytest.mark.parametrize("old,new", [(S.CONNECTING, S.CONNECTING), (S.STREAMING, S.CONNECTING), (S.RECONNECTING, S.STREAMING)])
def test_forbidden_transitions(old, new):
    machine = StateMachine(state=old)
    if old == new:
        assert not machine.to(new)
    else:
        with pytest.raises(InvalidTransition, match=f"{old} cannot become {new}"):
            machine.to(new)


def test_a_camera_that_never_streamed_has_no_outage():
    machine = StateMachine()
    machine.to(S.RECONNECTING)
    assert machine.outage_count == 0 and machine.outage_s == 0


def test_backoff_doubles_to_its_cap_with_bounded_jitter():
    backoff = Backoff(0.5, 4.0, jitter=0.2, rng=random.Random(1))
    bounds = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for bound in bounds:
        assert backoff.bound() == bound
        delay = backoff.next_delay()
        assert bound * 0.8 <= delay <= bound
    delays = {round(Backoff(1, 1, jitter=0.5).next_delay(), 6) for _ in range(20)}
    assert len(delays) > 1  # jittered
    backoff.reset()
    assert backoff.bound() == 0.5 and not backoff.exhausted
    limited = Backoff(1, 2, max_attempts=2)
    limited.next_delay(), limited.next_delay()
    assert limited.exhausted


def test_drop_oldest_keeps_the_newest_and_returns_each_drop():
    queue = FrameQueue(3, "drop_oldest")
    dropped = [queue.put(i) for i in range(10)]
    assert dropped == [None, None, None, 0, 1, 2, 3, 4, 5, 6]
    queue.close()
    assert [queue.get(), queue.get(), queue.get(), queue.get()] == [7, 8, 9, None]
    with pytest.raises(QueueClosed):
        queue.put(10)


def test_wait_blocks_the_producer_and_loses_nothing():
    queue = FrameQueue(2, "wait")
    got = []

    def consume():
        while (item := queue.get()) is not None:
            time.sleep(0.005)
            got.append(item)

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert all(queue.put(i) is None for i in range(50))
    queue.close()
    consumer.join(5)
    assert got == list(range(50))


def test_wait_is_released_by_close():
    queue = FrameQueue(1, "wait")
    queue.put(0)
    outcome = []
    producer = threading.Thread(target=lambda: outcome.append(pytest.raises(QueueClosed, queue.put, 1)))
    producer.start()
    time.sleep(0.05)
    assert producer.is_alive()  # blocked on the full queue
    queue.close()
    producer.join(2)
    assert outcome and not producer.is_alive()


def test_queue_arguments():
    with pytest.raises(ValueError):
        FrameQueue(0, "wait")
    with pytest.raises(ValueError):
        FrameQueue(1, "drop_newest")
