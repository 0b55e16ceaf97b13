"""Match's open tracks in its changelog (``vigil.match-state.v1``), so that they survive a restart or a partition move.

One record per (run, camera), written after a batch's outputs are delivered and before its offsets commit
(``StreamProcessor.checkpoint``). The latest record of a key is the state to carry on from: the tracks as they were
after the last committed face, and which faces were applied (a face redelivered after a crash is not applied
twice; its outputs were delivered before the record was written). Whichever match instance gets the camera next
reads the changelog and continues the same tracks, so their ids, and the alert ids derived from them, do not change.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from match.decision import Evidence
from match.tracking import Track
from runtime.kafka import EventReader
from runtime.settings import KafkaSettings
from schemas.events import MatchStateEvent, PersonEvidence, TrackedFace, TrackState, utc_now
from schemas.topics import MATCH_STATE

# Face ids remembered per camera as applied: more than a batch redelivered after a crash can hold.
APPLIED_KEPT = 512


@dataclass
class CameraState:
    """One (run, camera)'s open tracks, and what has been applied to them."""

    tracks: tuple[Track, ...] = ()
    applied: deque = field(default_factory=lambda: deque(maxlen=APPLIED_KEPT))  # face event ids, oldest first
    applied_until: datetime | None = None  # source time of the latest face applied

    def seen(self, face_event_id: str, source_ts: datetime) -> bool:
        """Applied already: one camera's faces arrive in order, so an earlier capture time means a redelivery."""
        return face_event_id in self.applied or (self.applied_until is not None and source_ts < self.applied_until)

    def applying(self, face_event_id: str, source_ts: datetime) -> None:
        self.applied.append(face_event_id)
        self.applied_until = source_ts if self.applied_until is None else max(self.applied_until, source_ts)

    def copy(self) -> CameraState:
        return CameraState(self.tracks, deque(self.applied, maxlen=APPLIED_KEPT), self.applied_until)


def track_state(track: Track) -> TrackState:
    return TrackState(
        track_id=track.track_id, first_face_event_id=track.first_face_event_id, started_at=track.started_at,
        last_seen=track.last_seen, last_frame_event_id=track.last_frame_event_id, last_face=track.last_ref,
        faces=track.faces, weight=track.weight,
        embedding_sum=np.asarray(track.embedding_sum, dtype="<f8").tobytes(),
        persons={person: PersonEvidence(weighted_score=ev.weighted_score, supporting=ev.supporting, best_score=ev.best_score,
                                        best_face=ev.best_face)
                 for person, ev in track.persons.items()},
        alerted=list(track.alerted),
    )


def restore_track(state: TrackState) -> Track:
    last: TrackedFace = state.last_face
    return Track(
        track_id=state.track_id, first_face_event_id=state.first_face_event_id, started_at=state.started_at,
        last_seen=state.last_seen, last_face_event_id=last.face_event_id, last_frame_event_id=state.last_frame_event_id,
        last_box=(last.box.x1, last.box.y1, last.box.x2, last.box.y2), last_ref=last, faces=state.faces, weight=state.weight,
        embedding_sum=np.frombuffer(state.embedding_sum, dtype="<f8").astype(np.float64),
        persons={person: Evidence(ev.weighted_score, ev.supporting, ev.best_score, ev.best_face) for person, ev in state.persons.items()},
        alerted=tuple(state.alerted),
    )


def state_event(run_id: str | None, camera_id: str, state: CameraState) -> MatchStateEvent:
    last = max((t.last_ref for t in state.tracks), key=lambda ref: ref.source_ts, default=None)
    return MatchStateEvent(
        camera_id=camera_id, run_id=run_id,
        source_ts=last.source_ts if last is not None else (state.applied_until or utc_now()),
        trace_id=last.trace_id if last is not None else f"match-state/{camera_id}",
        tracks=[track_state(t) for t in state.tracks], applied=list(state.applied), applied_until=state.applied_until,
    )


def camera_state(event: MatchStateEvent) -> CameraState:
    return CameraState(tuple(restore_track(t) for t in event.tracks), deque(event.applied, maxlen=APPLIED_KEPT), event.applied_until)


def read_changelog(settings: KafkaSettings) -> dict[tuple, CameraState]:
    """(run, camera) -> its latest state: the changelog read to its end (a key's records are in one partition, in order)."""
    latest: dict[tuple, MatchStateEvent] = {}
    with EventReader(settings, MATCH_STATE) as reader:
        for read in reader.read_to_end():
            if isinstance(read.event, MatchStateEvent):
                latest[(read.event.run_id, read.event.camera_id)] = read.event
    return {key: camera_state(event) for key, event in latest.items()}
