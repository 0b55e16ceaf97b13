"""Erasure and expiry of watchlist entries: vectors out of Milvus, photos out of S3, each audited first.

``remove_person`` erases a person on request (``vigil remove``, the console);
``purge_expired`` erases entries past their expiry (the housekeeper:
``vigil housekeep``). Search never returns an expired entry anyway
(``storage.vectors.Watchlist.search``); the purge makes it gone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from accountability.actors import Actor, require
from accountability.audit import AuditLog
from runtime.settings import VigilSettings
from storage.objects import ObjectStore
from storage.vectors import Entry, Watchlist


class NothingToRemove(LookupError):
    """The person has no entry and no photo."""


@dataclass(frozen=True)
class Erasure:
    person_id: str
    entry_ids: list[int]
    photo_keys: list[str]


def _erase(watchlist: Watchlist, store: ObjectStore, bucket: str, entries: list[Entry], photo_keys: list[str]) -> None:
    watchlist.delete(entries)
    store.delete(bucket, photo_keys)
    watchlist.compact()  # deleted vectors leave the segments, not only the index's view


def remove_person(settings: VigilSettings, actor: Actor, person_id: str, reason: str, *, audit: AuditLog,
                  watchlist: Watchlist | None = None, store: ObjectStore | None = None) -> Erasure:
    """Erase ``person_id`` (role ``enroller`` or ``authoriser``): every vector and every enrolment photo; audited
    (``remove``, listing what is deleted) before anything is."""
    require(actor, "enroller", "authoriser")
    if not reason.strip():
        raise ValueError("a reason is required to remove anyone")
    own = watchlist is None
    watchlist = watchlist or Watchlist(settings.milvus)
    store = store or ObjectStore(settings.s3)
    bucket = settings.s3.watchlist_bucket
    try:
        watchlist.ensure_collection()
        entries = watchlist.entries(person_id=person_id)
        photos = sorted(set(store.list_keys(bucket, f"{person_id}/")) | {e.photo_key for e in entries})
        if not entries and not photos:
            raise NothingToRemove(f"{person_id!r} has no watchlist entry and no enrolment photo")
        erasure = Erasure(person_id, [e.id for e in entries], photos)
        audit.append(actor, "remove", person_id, reason, {"entries": len(entries), "entry_ids": erasure.entry_ids,
                                                          "photos": photos, "bucket": bucket})
        _erase(watchlist, store, bucket, entries, photos)
        left = watchlist.entries(person_id=person_id)  # Strong consistency: the deletion is visible to every search
        if left:
            raise RuntimeError(f"{len(left)} entries of {person_id!r} still in Milvus after their deletion")
        return erasure
    finally:
        if own:
            watchlist.close()


def expire_entries(settings: VigilSettings, actor: Actor, entries: list[Entry], reason: str, *, audit: AuditLog,
                   watchlist: Watchlist, store: ObjectStore) -> list[Erasure]:
    """Erase these entries with their photos; one ``expire`` audit event per person, before the deletion."""
    by_person: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        by_person[entry.person_id].append(entry)
    bucket = settings.s3.watchlist_bucket
    erased = []
    for person_id, mine in sorted(by_person.items()):
        photos = sorted({e.photo_key for e in mine})
        audit.append(actor, "expire", person_id, reason, {"entries": len(mine), "entry_ids": [e.id for e in mine],
                                                          "photos": photos, "bucket": bucket,
                                                          "expires_at": [e.expires_at for e in mine]})
        _erase(watchlist, store, bucket, mine, photos)
        erased.append(Erasure(person_id, [e.id for e in mine], photos))
    return erased


def purge_expired(settings: VigilSettings, actor: Actor, *, audit: AuditLog, watchlist: Watchlist, store: ObjectStore,
                  now: datetime | None = None) -> list[Erasure]:
    """Erase every entry expired at ``now`` (default: now), with its photo."""
    return expire_entries(settings, actor, watchlist.entries(expired_at=now), "watchlist entries reached their expiry",
                          audit=audit, watchlist=watchlist, store=store)
