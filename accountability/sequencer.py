"""The audit sequencer (stage ``audit``): seals audit requests into the hash chain, and anchors its head in S3.

One consumer of the one-partition requests topic (the consumer group gives
the partition to a single member): it continues the chain from the last event
of ``vigil.audit.v1`` that verifies (``accountability.audit.chain_state``) and
skips requests already sealed, so a redelivery after a crash seals nothing
twice. Malformed requests go to the dead letters like any stage's input.
Every ``audit.anchor_interval_s`` (and when it stops) it writes the head of
the chain delivered so far to the anchor bucket under Object Lock.
"""

from __future__ import annotations

import logging
import time

from accountability.audit import chain_state, seal, write_anchor
from runtime.stream import StreamProcessor
from schemas.events import AuditEvent
from schemas.stages import AUDIT_SEQUENCER
from schemas.topics import AUDIT
from storage.objects import ObjectStore, StorageError

log = logging.getLogger(__name__)


class AuditSequencer(StreamProcessor):
    stage = AUDIT_SEQUENCER

    def start(self) -> None:
        state = chain_state(self.settings)
        if state.breaks:
            log.error("the sealed audit log has %d break(s), first at %s; sealing goes on from the last event that verifies",
                      len(state.breaks), state.breaks[0])
        self.head, self.sealed_ids = state.head, state.sealed_ids
        self.next_seq, self.prev_hash = state.next_seq, state.head_hash
        self.store = ObjectStore(self.settings.s3)
        self.anchored_seq = 0
        self.next_anchor = 0.0
        log.info("audit chain continues at seq %d (%d requests waiting)", self.next_seq, state.pending)

    def process(self, requests: list[AuditEvent]) -> list[tuple]:
        self.anchor(due_only=True)  # the previous batch was delivered before this one was handed over
        seq, prev_hash, head, ids = self.next_seq, self.prev_hash, self.head, set()
        outputs = []
        for request in requests:
            if request.event_id in self.sealed_ids or request.event_id in ids:
                continue  # sealed before a restart, or a redelivery
            head = seal(request, seq, prev_hash)
            outputs.append((AUDIT, head))
            ids.add(request.event_id)
            seq, prev_hash = seq + 1, head.hash
        # Only now: a batch the runtime retries starts from the same state.
        self.next_seq, self.prev_hash, self.head = seq, prev_hash, head
        self.sealed_ids |= ids
        return outputs

    def anchor(self, *, due_only: bool) -> None:
        if self.head is None or self.head.seq == self.anchored_seq:
            return
        if due_only and time.monotonic() < self.next_anchor:
            return
        try:
            key = write_anchor(self.store, self.settings, self.head)
            self.anchored_seq = self.head.seq
            log.info("anchored the audit chain head (seq %d) at %s", self.head.seq, key)
        except StorageError as exc:  # a missed anchor is not a reason to stop sealing
            log.warning("could not anchor the audit chain head: %s", exc)
        self.next_anchor = time.monotonic() + self.settings.audit.anchor_interval_s

    def stop(self) -> None:
        if getattr(self, "store", None) is not None:
            self.anchor(due_only=False)
