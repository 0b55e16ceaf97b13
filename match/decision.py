"""Pure decision logic: evidence per (track, person), the alert rule, and deterministic ids.

A track (``match.tracking``) collects one person's faces on one camera. Each
face is searched in the watchlist; its score for a person is the best cosine
similarity among that person's entries in the face's ``search_k`` hits. Over
the track, a person's **aggregate** is the weighted mean of those scores
over *all* the track's faces, a face whose hits lack the person counting 0
(no support): ``sum(w * score) / sum(w)``. A face's weight grows with its size,
its detection probability and its quality (sharpness and pose, from detect),
so a blurred, turned or distant face sways the decision less.

A track alerts on a person once, when the aggregate reaches the threshold and
at least ``min_faces`` of its faces each reached it too: one lucky frame of a
lookalike is not enough, and neither is a long track of near misses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

# A face this many pixels on its shorter side (or larger) gets the full size weight.
FULL_WEIGHT_FACE_PX = 100.0
# No face weighs nothing: a track of poor faces can still be decided, just on poor evidence.
MIN_WEIGHT = 0.01


def _digest(*parts: str | None) -> str:
    return hashlib.sha256("|".join("" if p is None else p for p in parts).encode()).hexdigest()[:32]


def track_id(run_id: str | None, camera_id: str, first_face_event_id: str) -> str:
    """Deterministic: the same first face (a retried batch, a replay of the same run) gives the same track id."""
    return _digest("track", run_id, camera_id, first_face_event_id)


def alert_id(track_id: str, person_id: str) -> str:
    """Deterministic, one per (track, person): a redelivered sighting gives the same id, so consumers can deduplicate."""
    return _digest(track_id, person_id)


def face_weight(face_px: float, det_prob: float, quality: float | None) -> float:
    """How much one face counts in its track's aggregate: size x probability x quality (quality None counts 1)."""
    size = min(1.0, max(0.0, face_px) / FULL_WEIGHT_FACE_PX)
    return max(MIN_WEIGHT, size * max(0.0, min(1.0, det_prob)) * (1.0 if quality is None else quality))


def best_per_person(hits: Iterable) -> dict[str, float]:
    """Person -> best score among search hits (objects with ``person_id`` and ``score``)."""
    best: dict[str, float] = {}
    for hit in hits:
        if hit.score > best.get(hit.person_id, float("-inf")):
            best[hit.person_id] = float(hit.score)
    return best


@dataclass(frozen=True)
class Evidence:
    """What a track holds for one person."""

    weighted_score: float = 0.0  # sum of weight * score over the track's faces that had the person among their hits
    supporting: int = 0  # faces whose score for the person reached the threshold
    best_score: float = float("-inf")
    best_face: Any = None  # the caller's reference to the face of best_score (the alert's evidence)

    def add(self, score: float, weight: float, threshold: float, face: Any) -> Evidence:
        better = score > self.best_score  # ties keep the earlier face
        return replace(
            self,
            weighted_score=self.weighted_score + weight * score,
            supporting=self.supporting + (score >= threshold),
            best_score=score if better else self.best_score,
            best_face=face if better else self.best_face,
        )


def add_face(persons: Mapping[str, Evidence], scores: Mapping[str, float], weight: float, threshold: float,
             face: Any) -> dict[str, Evidence]:
    """A new mapping: ``persons`` with one more face's scores (person -> score) added."""
    updated = dict(persons)
    for person, score in scores.items():
        updated[person] = updated.get(person, Evidence()).add(score, weight, threshold, face)
    return updated


def aggregate(evidence: Evidence, track_weight: float) -> float:
    """The person's weighted mean score over the whole track (faces without the person count 0)."""
    return evidence.weighted_score / track_weight if track_weight > 0 else 0.0


def due_alerts(persons: Mapping[str, Evidence], track_weight: float, alerted: Iterable[str], threshold: float,
               min_faces: int) -> list[tuple[str, float]]:
    """(person, aggregate) for each person the track should alert on now and has not yet, best first."""
    done = set(alerted)
    due = [
        (person, aggregate(ev, track_weight))
        for person, ev in persons.items()
        if person not in done and ev.supporting >= min_faces and aggregate(ev, track_weight) >= threshold
    ]
    return sorted(due, key=lambda item: (-item[1], item[0]))
