"""The match stage: embeddings in, watchlist search in Milvus, face tracks, alerts and ended tracks out.

Each face is searched in the watchlist (the ``search_k`` closest entries) and
joins a track of its camera (``match.tracking``); the track aggregates each
person's scores over its faces and raises at most one alert per (track,
person) (``match.decision``). The alert points at the track's best face for
the person: its transient evidence (frame and crop) is copied server-side to
the ``alerts/`` prefix of the evidence bucket, which keeps it as long as the
alert retention says; the transient copies expire with the transient
retention. An ended track is published on the tracks topic.

Retries: tracks live in memory, per (run, camera). A batch works on new track
values and they replace the stage's only once every output of the batch
exists, so a batch that fails part-way (S3, Milvus) is retried from the same
state. A face already applied (a redelivery) is not applied twice: the outputs
it produced are given again, with the same ids. After a restart or a
rebalance, tracks start afresh from the first face the consumer sees.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np
from prometheus_client import Gauge

from match.decision import alert_id, best_per_person, face_weight
from match.tracking import Ended, Face, Track, step
from runtime.stream import StreamProcessor
from schemas.events import AlertEvent, Box, EmbeddingEvent, TrackEndedEvent
from schemas.stages import MATCH
from schemas.topics import ALERTS, TRACKS
from storage.objects import ObjectStore, evidence_key
from storage.vectors import DIM, Watchlist

# Faces remembered as applied, with their outputs, for redeliveries (most recent first out of the window).
APPLIED_WINDOW = 16384
# (run, camera) pairs with open tracks; beyond this the least recently active pair's tracks are ended
# (reason evicted): a finished replay run's last tracks would otherwise stay open for ever.
MAX_OPEN_CAMERAS = 1024

TRACKS_OPEN = Gauge("vigil_tracks_open", "Face tracks a match consumer holds open.", ["stage"])


def _face_key(event: EmbeddingEvent) -> tuple:
    return event.run_id, event.camera_id, event.face_event_id


class FaceRef(NamedTuple):
    """What a track keeps of a face: enough to raise an alert on it or report the track's end."""

    face_event_id: str
    source_ts: object
    trace_id: str
    box: Box
    crop_key: str
    snapshot_key: str
    model: str


class MatchProcessor(StreamProcessor):
    stage = MATCH

    def __init__(self, settings):
        super().__init__(settings)
        self.tracks: OrderedDict[tuple, tuple[Track, ...]] = OrderedDict()  # (run, camera) -> open tracks, LRU order
        self.applied: OrderedDict[tuple, list[tuple]] = OrderedDict()  # (run, camera, face event id) -> its outputs

    def start(self) -> None:
        self.watchlist = Watchlist(self.settings.milvus)
        self.watchlist.ensure_collection()
        # One search before /readyz turns ready: the first real face does not pay for loading the collection.
        probe = np.zeros((1, DIM), dtype=np.float32)
        probe[0, 0] = 1.0
        self.watchlist.search(probe, limit=1, consistency_level="Bounded")
        self.store = ObjectStore(self.settings.s3)
        self.store.ensure_buckets()

    def process(self, embeddings: list[EmbeddingEvent]) -> list[tuple]:
        todo: dict[tuple, EmbeddingEvent] = {}
        for event in embeddings:
            if _face_key(event) not in self.applied:
                todo.setdefault(_face_key(event), event)
        hits = {}
        if todo:
            vectors = np.asarray([e.embedding for e in todo.values()], dtype=np.float32)
            found = self.watchlist.search(vectors, limit=self.settings.match.search_k, consistency_level="Bounded")
            hits = dict(zip(todo, found))

        working: dict[tuple, tuple[Track, ...]] = {}  # new track values; kept only when the whole batch succeeded
        produced: dict[tuple, list[tuple]] = {}
        outputs: list[tuple] = []
        for event in embeddings:
            face_key = _face_key(event)
            if face_key in produced or face_key in self.applied:  # already applied: the same outputs again
                outputs += produced[face_key] if face_key in produced else self.applied[face_key]
                continue
            key = (event.run_id, event.camera_id)
            result = step(working.get(key, self.tracks.get(key, ())), self._face(event, hits[face_key]), self.settings.match,
                          run_id=event.run_id, camera_id=event.camera_id)
            working[key] = result.tracks
            mine = [self._ended(key, ended) for ended in result.ended]
            mine += [self._alert(key, result.track, person, score) for person, score in result.alerts]
            produced[face_key] = mine
            outputs += mine

        # Every output exists (evidence copied): keep the new state.
        for key, tracks in working.items():
            self.tracks[key] = tracks
            self.tracks.move_to_end(key)
        evicted = []
        while len(self.tracks) > MAX_OPEN_CAMERAS:
            key, tracks = self.tracks.popitem(last=False)
            evicted += [self._ended(key, Ended(track, "evicted")) for track in tracks]
        if evicted:
            outputs += evicted
            last = next(reversed(produced), None)
            if last is not None:  # redelivering that face gives them again too
                produced[last] = produced[last] + evicted
        for face_key, mine in produced.items():
            self.applied[face_key] = mine
        while len(self.applied) > APPLIED_WINDOW:
            self.applied.popitem(last=False)
        TRACKS_OPEN.labels(self.name).set(sum(len(t) for t in self.tracks.values()))
        return outputs

    def _face(self, event: EmbeddingEvent, hits) -> Face:
        box = event.box
        ref = FaceRef(event.face_event_id, event.source_ts, event.trace_id, box, event.crop_key, event.snapshot_key, event.model)
        return Face(
            face_event_id=event.face_event_id,
            frame_event_id=event.frame_event_id,
            source_ts=event.source_ts,
            box=(box.x1, box.y1, box.x2, box.y2),
            embedding=np.asarray(event.embedding, dtype=np.float64),
            weight=face_weight(min(box.width, box.height), event.det_prob, event.quality),
            scores=best_per_person(hits),
            ref=ref,
        )

    def _alert(self, key: tuple, track: Track, person_id: str, track_score: float) -> tuple:
        run_id, camera_id = key
        evidence = track.persons[person_id]
        face: FaceRef = evidence.best_face
        ident = alert_id(track.track_id, person_id)
        snapshot_key, crop_key = (
            evidence_key("alerts", camera_id, face.source_ts, f"{ident}-{kind}.jpg") for kind in ("snapshot", "crop")
        )
        bucket = self.settings.s3.evidence_bucket
        self.store.copy(bucket, face.snapshot_key, snapshot_key)
        self.store.copy(bucket, face.crop_key, crop_key)
        return (ALERTS, AlertEvent(
            event_id=ident,
            alert_id=ident,
            camera_id=camera_id,
            source_ts=face.source_ts,
            trace_id=face.trace_id,
            run_id=run_id,
            person_id=person_id,
            score=evidence.best_score,
            threshold=self.settings.match.threshold,
            face_event_id=face.face_event_id,
            box=face.box,
            snapshot_key=snapshot_key,
            crop_key=crop_key,
            model=face.model,
            track_id=track.track_id,
            track_score=round(track_score, 6),
            track_faces=track.faces,
        ))

    def _ended(self, key: tuple, ended: Ended) -> tuple:
        run_id, camera_id = key
        track = ended.track
        x1, y1, x2, y2 = track.last_box
        return (TRACKS, TrackEndedEvent(
            event_id=f"{track.track_id}-end",
            camera_id=camera_id,
            source_ts=track.last_seen,
            trace_id=track.last_ref.trace_id,
            run_id=run_id,
            track_id=track.track_id,
            reason=ended.reason,
            started_at=track.started_at,
            first_face_event_id=track.first_face_event_id,
            last_face_event_id=track.last_face_event_id,
            faces=track.faces,
            last_box=Box(x1=x1, y1=y1, x2=x2, y2=y2),
            alerted_person_ids=list(track.alerted),
        ))
