"""Face tracks: one camera's faces of one person over consecutive frames. Pure logic, no I/O.

Match runs the tracker because it holds the embeddings, and because events
are keyed by camera: one camera's faces reach one match consumer, in order.
Tracks are kept per (run, camera) and live in source time.

The parameters are ``MatchSettings``' own fields. A face joins the open track
it resembles most, when its cosine similarity to the track's mean embedding
plus ``track_iou_bonus`` times the IoU of its box with the track's last box
reaches ``track_similarity`` (a face where the track just was needs less
likeness than one across the frame); otherwise it starts a new track. A track
takes at most one face per frame. A track ends once a later face of its camera
arrives more than ``track_gap_s`` seconds of source time after the track's last
face (there is no timer: the camera's own later events are the clock), or when
it is the least recently seen beyond ``max_tracks_per_camera`` open tracks.

Everything here is immutable: ``step`` returns new tracks and never changes
its inputs, so a caller can work on a batch and keep the result only once the
batch's outputs exist (a retried batch then starts from the same state and
gives the same tracks, ids and decisions).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping

import numpy as np

from match.decision import Evidence, add_face, due_alerts, track_id
from runtime.settings import MatchSettings


@dataclass(frozen=True)
class Face:
    """One face as the tracker sees it."""

    face_event_id: str
    frame_event_id: str
    source_ts: datetime
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    embedding: np.ndarray = field(repr=False)  # (512,) L2-normalised
    weight: float = 1.0  # match.decision.face_weight
    scores: Mapping[str, float] = field(default_factory=dict)  # person -> this face's score
    ref: Any = None  # the caller's reference to the face (kept as evidence)


@dataclass(frozen=True, eq=False)
class Track:
    track_id: str
    first_face_event_id: str
    started_at: datetime
    last_seen: datetime
    last_face_event_id: str
    last_frame_event_id: str
    last_box: tuple[float, float, float, float]
    last_ref: Any
    faces: int
    weight: float  # sum of the faces' weights
    embedding_sum: np.ndarray = field(repr=False)  # weighted sum of the faces' embeddings; never modified in place
    persons: Mapping[str, Evidence] = field(default_factory=dict)
    alerted: tuple[str, ...] = ()

    @property
    def embedding(self) -> np.ndarray:
        """The track's mean embedding, L2-normalised."""
        norm = float(np.linalg.norm(self.embedding_sum))
        return self.embedding_sum / norm if norm > 0 else self.embedding_sum


@dataclass(frozen=True)
class Ended:
    track: Track
    reason: str  # "gap" or "evicted"


@dataclass(frozen=True)
class Step:
    """What one face did: the camera's open tracks after it, the tracks it ended, its track, the alerts now due."""

    tracks: tuple[Track, ...]
    ended: tuple[Ended, ...]
    track: Track
    alerts: tuple[tuple[str, float], ...]  # (person, aggregate) to alert on now, best first


def iou(a, b) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def affinity(track: Track, face: Face, match: MatchSettings) -> float:
    """Cosine similarity to the track's mean embedding, plus the overlap bonus."""
    return float(np.dot(track.embedding, face.embedding)) + match.track_iou_bonus * iou(track.last_box, face.box)


def _new_track(face: Face, run_id: str | None, camera_id: str, match: MatchSettings) -> Track:
    return _extend(Track(
        track_id=track_id(run_id, camera_id, face.face_event_id), first_face_event_id=face.face_event_id,
        started_at=face.source_ts, last_seen=face.source_ts, last_face_event_id=face.face_event_id,
        last_frame_event_id=face.frame_event_id, last_box=face.box, last_ref=face.ref, faces=0, weight=0.0,
        embedding_sum=np.zeros_like(face.embedding, dtype=np.float64),
    ), face, match)


def _extend(track: Track, face: Face, match: MatchSettings) -> Track:
    return replace(
        track,
        last_seen=max(track.last_seen, face.source_ts),
        last_face_event_id=face.face_event_id,
        last_frame_event_id=face.frame_event_id,
        last_box=face.box,
        last_ref=face.ref,
        faces=track.faces + 1,
        weight=track.weight + face.weight,
        embedding_sum=track.embedding_sum + face.weight * np.asarray(face.embedding, dtype=np.float64),
        persons=add_face(track.persons, face.scores, face.weight, match.threshold, face.ref),
    )


def step(tracks: tuple[Track, ...], face: Face, match: MatchSettings, *, run_id: str | None, camera_id: str) -> Step:
    """Add one face of camera ``camera_id`` (run ``run_id``) to that camera's open ``tracks``."""
    ended: list[Ended] = []
    open_tracks: list[Track] = []
    for track in tracks:
        if (face.source_ts - track.last_seen).total_seconds() > match.track_gap_s:
            ended.append(Ended(track, "gap"))
        else:
            open_tracks.append(track)

    best, best_affinity = None, float("-inf")
    for i, track in enumerate(open_tracks):
        if track.last_frame_event_id == face.frame_event_id:
            continue  # one face per frame per track
        a = affinity(track, face, match)
        if a >= match.track_similarity and a > best_affinity:  # ties keep the older track
            best, best_affinity = i, a

    if best is None:
        track = _new_track(face, run_id, camera_id, match)
        open_tracks.append(track)
    else:
        track = _extend(open_tracks[best], face, match)
        open_tracks[best] = track

    alerts = due_alerts(track.persons, track.weight, track.alerted, match.threshold, match.min_track_faces)
    if alerts:
        updated = replace(track, alerted=track.alerted + tuple(person for person, _ in alerts))
        open_tracks[open_tracks.index(track)] = updated
        track = updated

    while len(open_tracks) > match.max_tracks_per_camera:  # evict the least recently seen (never the face's own track)
        oldest = min((t for t in open_tracks if t is not track), key=lambda t: t.last_seen)
        open_tracks.remove(oldest)
        ended.append(Ended(oldest, "evicted"))

    return Step(tracks=tuple(open_tracks), ended=tuple(ended), track=track, alerts=tuple(alerts))
