"""Enrolment: photos of a person -> checked faces -> templates in the watchlist, with an audit record.

A photo is refused (and the watchlist left unchanged by it) unless it holds
exactly one face, that face passes detect's quality gate (size, probability,
blur, pose: the defaults, not a camera's overrides), and it is not a
near-duplicate (``enroll.duplicate_similarity``) of a face already enrolled,
for this person or anyone else, or of another photo in the same request.
Every enrolment and every refusal is written to the audit topic with who did
it and why.

Each accepted photo is its own watchlist entry ("all vectors"); match takes a
person's best entry. ``python -m bench.templates`` measures that against one
normalised mean template per person.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from detect.model import FaceDetector
from detect.quality import assess as assess_face
from detect.quality import quality_gate
from embed.model import FaceEmbedder
from runtime.device import device_from_settings
from runtime.kafka import EventProducer
from runtime.settings import VigilSettings
from schemas.events import AuditEvent, utc_now
from schemas.topics import AUDIT
from storage.objects import ObjectStore
from storage.vectors import Watchlist

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
AUDIT_SCOPE = "watchlist"  # the camera_id of audit events about the watchlist


class EnrollmentError(Exception):
    """Nothing could be enrolled; the message says why for each photo."""


@dataclass
class EnrollResult:
    person_id: str
    enrolled: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # photo -> reason


def load_photo(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def photos_by_person(directory: Path) -> dict[str, list[Path]]:
    """One sub-folder per person: ``DIR/<person_id>/*.jpg``."""
    if not directory.is_dir():
        raise EnrollmentError(f"watchlist folder {directory} does not exist")
    people = {
        sub.name: sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for sub in sorted(directory.iterdir())
        if sub.is_dir()
    }
    people = {person: photos for person, photos in people.items() if photos}
    if not people:
        raise EnrollmentError(f"{directory} holds no person folders with photos (expected {directory}/<person_id>/<photo>.jpg)")
    return people


class Enroller:
    def __init__(self, settings: VigilSettings, *, detector: FaceDetector | None = None, embedder: FaceEmbedder | None = None):
        device = device_from_settings(settings.models)
        self.settings = settings
        # Enrolment photos are held to a stricter standard than live frames.
        self.detector = detector or FaceDetector(settings.detect, device)
        self.quality_limits = quality_gate(settings.detect).defaults
        self.embedder = embedder or FaceEmbedder(settings.models.weights_dir, device)
        self.store = ObjectStore(settings.s3)
        self.store.ensure_buckets()
        self.watchlist = Watchlist(settings.milvus)
        self.watchlist.ensure_collection()
        self.producer = EventProducer(settings.kafka, client_id="vigil-enroll")

    def enroll(self, person_id: str, photos: list[Path], *, actor: str, reason: str) -> EnrollResult:
        if not reason.strip():
            raise EnrollmentError("a reason is required to enroll anyone (--reason)")
        result = EnrollResult(person_id)
        accepted: list[tuple[Path, bytes, np.ndarray]] = []
        for photo in photos:
            try:
                image = load_photo(photo)
            except ValueError as exc:
                result.refused[str(photo)] = str(exc)
                continue
            faces = self.detector.detect([image])[0]
            if len(faces) != 1:
                found = "no face" if not faces else f"{len(faces)} faces"
                result.refused[str(photo)] = f"{found} found in {photo.name}; an enrolment photo must show exactly one face"
                continue
            face = faces[0]
            verdict = assess_face(face.box, face.prob, face.landmarks, face.crop, self.quality_limits)
            if not verdict.accepted:
                result.refused[str(photo)] = (
                    f"the face in {photo.name} fails the quality gate ({verdict.reason}: {verdict.face_px:.0f} px, "
                    f"p={verdict.prob:.3f}, sharpness {verdict.sharpness}, yaw {verdict.yaw_deg} deg, pitch {verdict.pitch_deg} deg)")
                continue
            accepted.append((photo, photo.read_bytes(), face.crop))
        vectors = self.embedder.embed([crop for _, _, crop in accepted])
        keep = self._drop_near_duplicates(person_id, accepted, vectors, result)
        accepted, vectors = [accepted[i] for i in keep], vectors[keep]
        if accepted:
            keys = []
            for photo, data, _ in accepted:
                key = f"{person_id}/{hashlib.sha256(data).hexdigest()[:16]}{photo.suffix.lower()}"
                self.store.put_bytes(self.settings.s3.watchlist_bucket, key, data, "image/jpeg" if photo.suffix.lower() in {".jpg", ".jpeg"} else "image/png")
                keys.append(key)
            self.watchlist.add(person_id, vectors, keys, enrolled_by=actor, reason=reason)
            result.enrolled = [str(p) for p, _, _ in accepted]
            self._audit("enroll", person_id, actor, reason, {"photos": keys, "model": self.embedder.model_id})
        for photo, why in result.refused.items():
            log.warning("refused %s for %s: %s", photo, person_id, why)
            self._audit("enroll_refused", person_id, actor, reason, {"photo": Path(photo).name, "why": why})
        self.producer.flush()
        return result

    def _drop_near_duplicates(self, person_id: str, accepted: list, vectors: np.ndarray, result: EnrollResult) -> list[int]:
        """Indices of ``accepted`` that are no near-duplicate of an enrolled face or of an earlier photo here."""
        if not accepted:
            return []
        limit = self.settings.enroll.duplicate_similarity
        enrolled = self.watchlist.search(vectors, limit=1)
        keep: list[int] = []
        for i, (photo, _, _) in enumerate(accepted):
            twin = next((accepted[j][0] for j in keep if float(vectors[i] @ vectors[j]) >= limit), None)
            hit = enrolled[i][0] if enrolled[i] else None
            if twin is not None:
                result.refused[str(photo)] = f"{photo.name} is a near-duplicate of {twin.name} in this request (cosine >= {limit})"
            elif hit is not None and hit.score >= limit:
                whose = "this person" if hit.person_id == person_id else f"{hit.person_id!r}"
                result.refused[str(photo)] = (f"{photo.name} is a near-duplicate (cosine {hit.score:.3f} >= {limit}) of "
                                              f"{hit.photo_key}, already enrolled for {whose}")
            else:
                keep.append(i)
        return keep

    def _audit(self, action: str, subject: str, actor: str, reason: str, details: dict) -> None:
        now = utc_now()
        self.producer.send(AUDIT, AuditEvent(
            camera_id=AUDIT_SCOPE, source_ts=now, trace_id=f"audit-{now.timestamp():.6f}",
            actor=actor, action=action, subject=subject, reason=reason, details=details,
        ))

    def close(self) -> None:
        self.producer.close()
