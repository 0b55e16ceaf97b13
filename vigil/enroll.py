"""Enrolment: photos of a person -> checked faces -> templates in the watchlist, with an audit record.

A photo is refused (and the watchlist left unchanged by it) unless it holds
exactly one face, that face passes detect's quality gate (size, probability,
blur, pose: the defaults, not a camera's overrides), and it is not a
near-duplicate (``enroll.duplicate_similarity``) of a face already enrolled,
for this person or anyone else, or of another photo in the same request.
Every entry carries an expiry (at most ``enroll.max_expiry_days`` away) and
the source of its photo.

Fail closed: the ``enroll`` audit event is written (acknowledged by every
in-sync replica) before the photos go to S3 and the vectors to Milvus, so an
enrolment whose record cannot be written does not happen. Each refusal is
audited too (``enroll_refused``). If storage fails after the audit event, what
was written is rolled back and the failure is audited as a refusal.

Each accepted photo is its own watchlist entry ("all vectors"); match takes a
person's best entry. ``python -m bench.templates`` measures that against one
normalised mean template per person.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from detect.model import FaceDetector
from detect.quality import assess as assess_face
from detect.quality import quality_gate
from accountability.actors import Actor, require
from accountability.audit import AuditLog
from embed.model import FaceEmbedder
from runtime.device import device_from_settings
from runtime.settings import VigilSettings
from schemas.events import as_utc, parse_time, utc_now
from storage.objects import ObjectStore, StorageError
from storage.vectors import Watchlist, WatchlistError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class EnrollmentError(Exception):
    """Nothing could be enrolled; the message says why for each photo."""


@dataclass
class EnrollResult:
    person_id: str
    enrolled: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # photo -> reason
    expires_at: datetime | None = None
    entry_ids: list[int] = field(default_factory=list)  # the new watchlist entries


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """``--expires``: a duration from now (``90m``, ``12h``, ``30d``, ``2w``), a date (the entry lasts through that
    day, UTC) or an ISO time."""
    now = now or utc_now()
    text = text.strip()
    duration = _DURATION.match(text)
    if duration:
        return now + timedelta(**{_UNITS[duration.group(2)]: float(duration.group(1))})
    try:
        return datetime.combine(date.fromisoformat(text) + timedelta(days=1), time(), timezone.utc)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError:
        raise EnrollmentError(f"--expires {text!r}: give a duration (30d, 12h, 90m, 2w), a date (2026-12-31) or an ISO time") from None


def check_expiry(expires_at: datetime | None, settings: VigilSettings, now: datetime | None = None) -> datetime:
    """``expires_at`` if it is given, in the future and within ``enroll.max_expiry_days``; else ``EnrollmentError``."""
    now = now or utc_now()
    if expires_at is None:
        raise EnrollmentError("an expiry is required to enroll anyone (--expires DATE|DURATION)")
    expires_at = as_utc(expires_at)
    longest = now + timedelta(days=settings.enroll.max_expiry_days)
    if expires_at <= now:
        raise EnrollmentError(f"the expiry {expires_at.isoformat()} has passed")
    if expires_at > longest:
        raise EnrollmentError(f"the expiry {expires_at.isoformat()} lies beyond enroll.max_expiry_days "
                              f"({settings.enroll.max_expiry_days:g} days, until {longest.isoformat()})")
    return expires_at


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
    def __init__(self, settings: VigilSettings, *, detector: FaceDetector | None = None, embedder: FaceEmbedder | None = None,
                 audit: AuditLog | None = None):
        # The audit log first: without it nothing else is touched.
        self._own_audit = audit is None
        self.audit = audit or AuditLog(settings, client_id="vigil-enroll")
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

    def enroll(self, person_id: str, photos: list[Path], *, actor: Actor, reason: str, expires_at: datetime | None,
               source: str | None = None, deployment_id: str | None = None, approval: dict | None = None) -> EnrollResult:
        """Enrol the photos of ``person_id`` that pass the checks, each expiring at ``expires_at`` and recorded with its
        ``source`` (default: the photo's file name).

        The actor is an ``enroller``, or the ``authoriser`` approving someone else's proposal: ``approval`` (proposal
        id, proposer) then goes into the enrolment's audit event.
        """
        require(actor, "authoriser" if approval else "enroller")
        if not reason.strip():
            raise EnrollmentError("a reason is required to enroll anyone (--reason)")
        expires_at = check_expiry(expires_at, self.settings)
        result = EnrollResult(person_id, expires_at=expires_at)
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
        for photo, why in result.refused.items():
            log.warning("refused %s for %s: %s", photo, person_id, why)
            self.audit.append(actor, "enroll_refused", person_id, reason, {"photo": Path(photo).name, "why": why},
                              deployment_id=deployment_id)
        if accepted:
            keys = [f"{person_id}/{hashlib.sha256(data).hexdigest()[:16]}{photo.suffix.lower()}" for photo, data, _ in accepted]
            sources = [source or f"photo file {photo.name}" for photo, _, _ in accepted]
            self.audit.append(actor, "enroll", person_id, reason, {
                "photos": keys, "sources": sources, "expires_at": expires_at.isoformat(), "model": self.embedder.model_id,
                **({"approval": approval} if approval else {}),
            }, deployment_id=deployment_id)
            result.entry_ids = self._store(person_id, accepted, keys, vectors, actor=actor, reason=reason, expires_at=expires_at, sources=sources,
                        deployment_id=deployment_id)
            result.enrolled = [str(p) for p, _, _ in accepted]
        return result

    def _store(self, person_id: str, accepted: list, keys: list[str], vectors: np.ndarray, *, actor: Actor, reason: str,
               expires_at: datetime, sources: list[str], deployment_id: str | None) -> list[int]:
        """Photos to S3, vectors to Milvus; on failure, undo what was written and audit the failure as a refusal."""
        bucket = self.settings.s3.watchlist_bucket
        written: list[str] = []
        try:
            for (photo, data, _), key in zip(accepted, keys):
                self.store.put_bytes(bucket, key, data, "image/jpeg" if photo.suffix.lower() in {".jpg", ".jpeg"} else "image/png")
                written.append(key)
            return self.watchlist.add(person_id, vectors, keys, enrolled_by=actor.name, reason=reason, expires_at=expires_at,
                                      sources=sources)
        except (StorageError, WatchlistError) as exc:
            self.store.delete(bucket, written)
            self.audit.append(actor, "enroll_refused", person_id, reason, {"photos": keys, "why": f"storage failed: {exc}"},
                              deployment_id=deployment_id)
            raise

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

    def close(self) -> None:
        self.watchlist.close()
        if self._own_audit:
            self.audit.close()
