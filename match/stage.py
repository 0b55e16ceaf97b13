"""The match stage: embeddings in, watchlist search in Milvus, alerts out.

On a hit, the transient evidence (frame and crop) is copied server-side to the
``alerts/`` prefix of the evidence bucket, which keeps it as long as the alert
retention says; the transient copies expire with the transient retention.
"""

from __future__ import annotations

import numpy as np

from match.decision import AlertGate, alert_id
from runtime.stream import StreamProcessor
from schemas.events import AlertEvent, EmbeddingEvent
from schemas.topics import ALERTS, EMBEDDINGS
from storage.objects import ObjectStore, evidence_key
from storage.vectors import Watchlist


class MatchProcessor(StreamProcessor):
    name = "match"
    source = EMBEDDINGS
    outputs = (ALERTS,)

    @property
    def batch_size(self) -> int:
        return self.settings.match.batch_size

    @property
    def batch_wait_s(self) -> float:
        return self.settings.match.batch_wait_s

    def start(self) -> None:
        self.watchlist = Watchlist(self.settings.milvus)
        self.watchlist.ensure_collection()
        self.store = ObjectStore(self.settings.s3)
        self.store.ensure_buckets()
        self.gate = AlertGate(self.settings.match.cooldown_s)

    def process(self, embeddings: list[EmbeddingEvent]) -> list[tuple]:
        threshold = self.settings.match.threshold
        vectors = np.asarray([e.embedding for e in embeddings], dtype=np.float32)
        outputs, raised = [], {}
        for event, hits in zip(embeddings, self.watchlist.search(vectors, limit=1, consistency_level="Bounded")):
            if not hits or hits[0].score < threshold:
                continue
            hit = hits[0]
            key = (event.run_id, event.camera_id, hit.person_id)
            if key in raised or not self.gate.is_open(key, event.source_ts):
                continue
            raised[key] = event.source_ts
            ident = alert_id(event.face_event_id, hit.person_id)
            snapshot_key, crop_key = (
                evidence_key("alerts", event.camera_id, event.source_ts, f"{ident}-{kind}.jpg") for kind in ("snapshot", "crop")
            )
            bucket = self.settings.s3.evidence_bucket
            self.store.copy(bucket, event.snapshot_key, snapshot_key)
            self.store.copy(bucket, event.crop_key, crop_key)
            outputs.append((ALERTS, AlertEvent(
                event_id=ident,
                alert_id=ident,
                camera_id=event.camera_id,
                source_ts=event.source_ts,
                trace_id=event.trace_id,
                run_id=event.run_id,
                person_id=hit.person_id,
                score=float(hit.score),
                threshold=threshold,
                face_event_id=event.face_event_id,
                box=event.box,
                snapshot_key=snapshot_key,
                crop_key=crop_key,
                model=event.model,
            )))
        for key, source_ts in raised.items():
            self.gate.record(key, source_ts)
        return outputs
