"""Retention: passers-by forgotten within seconds of their track, evidence and footage kept only as long as set.

``TransientRefs`` is match's bookkeeping of which transient objects (a face's
crop, its frame) each open track holds: when a track ends its crops can go,
and a frame once every track that holds it has ended (alert evidence is
copied to ``alerts/`` before). ``Housekeeper`` deletes by age what no track
accounts for any more (after a crash, a dead letter) and what retention says
must go: claim-check frames, alert evidence, expired watchlist entries. It runs
apart from the stages, as ``vigil housekeep`` (in Kubernetes the
``vigil-housekeep`` CronJob, principal ``vigil-housekeeper``): one sweep at a
time, under rights of its own.
Every deletion is audited (``retention_delete``, counts only, never a face)
before it happens; an audit that cannot be written leaves the objects for the
next sweep.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta, timezone

from accountability.actors import Actor
from accountability.audit import AuditLog
from accountability.watchlist import purge_expired
from runtime.settings import VigilSettings
from storage.objects import ObjectStore
from storage.vectors import Watchlist

log = logging.getLogger(__name__)

TRANSIENT_PREFIX = "transient/"
ALERTS_PREFIX = "alerts/"


class TransientRefs:
    """Which open tracks hold which transient objects; pure bookkeeping."""

    def __init__(self):
        self.crops: dict[str, set[str]] = defaultdict(set)  # track id -> its faces' crop keys
        self.frames: dict[str, set[str]] = defaultdict(set)  # track id -> its faces' frame (snapshot) keys
        self.holders: dict[str, set[str]] = defaultdict(set)  # frame key -> open tracks holding it

    def hold(self, track_id: str, crop_key: str, frame_key: str) -> None:
        self.crops[track_id].add(crop_key)
        self.frames[track_id].add(frame_key)
        self.holders[frame_key].add(track_id)

    def release(self, track_id: str) -> list[str]:
        """The track ended: the keys no open track holds any more."""
        free = sorted(self.crops.pop(track_id, set()))
        for frame in sorted(self.frames.pop(track_id, set())):
            holders = self.holders.get(frame, set())
            holders.discard(track_id)
            if not holders:
                self.holders.pop(frame, None)
                free.append(frame)
        return free

    @property
    def tracks(self) -> list[str]:
        return list(self.crops)


def delete_audited(audit: AuditLog, actor: Actor, store: ObjectStore, bucket: str, keys: list[str], rule: str,
                   reason: str) -> int:
    """Delete ``keys`` from ``bucket`` after one ``retention_delete`` audit event that counts them."""
    keys = sorted(set(keys))
    if not keys:
        return 0
    audit.append(actor, "retention_delete", f"s3://{bucket}", reason, {"rule": rule, "bucket": bucket, "objects": len(keys)})
    return store.delete(bucket, keys)


def hour_of_key(key: str) -> datetime | None:
    """The capture hour of an evidence key (``prefix/camera/YYYY/MM/DD/HH/name``), or None."""
    parts = key.split("/")
    if len(parts) < 7:
        return None
    try:
        return datetime(int(parts[2]), int(parts[3]), int(parts[4]), int(parts[5]), tzinfo=timezone.utc)
    except ValueError:
        return None


class Housekeeper:
    """One sweep of everything retention deletes by age (see the module doc); run by ``vigil housekeep``
    (every ``retention.sweep_interval_s`` in Kubernetes) and at the end of ``vigil run``."""

    def __init__(self, settings: VigilSettings, actor: Actor, *, audit: AuditLog, store: ObjectStore, watchlist: Watchlist):
        self.settings, self.actor, self.audit, self.store, self.watchlist = settings, actor, audit, store, watchlist

    def sweep(self, now: datetime | None = None) -> dict[str, int]:
        now = now or datetime.now(timezone.utc)
        s3, retention = self.settings.s3, self.settings.retention
        transient = self.store.list_keys(s3.evidence_bucket, TRANSIENT_PREFIX,
                                         modified_before=now - timedelta(seconds=retention.transient_max_age_s))
        frames = self.store.list_keys(s3.frames_bucket, modified_before=now - timedelta(seconds=retention.frames_max_age_s))
        # An hour folder goes once its whole hour is older than the retention.
        alert_cutoff = now - timedelta(days=retention.alert_evidence_days) - timedelta(hours=1)
        alerts = [k for k in self.store.list_keys(s3.evidence_bucket, ALERTS_PREFIX)
                  if (hour_of_key(k) or now) < alert_cutoff]
        counts = {
            "transient": self.delete(s3.evidence_bucket, transient, "transient_backstop",
                                     f"transient evidence older than {retention.transient_max_age_s:g} s"),
            "frames": self.delete(s3.frames_bucket, frames, "claim_check_frames",
                                  f"claim-check frames older than {retention.frames_max_age_s:g} s"),
            "alert_evidence": self.delete(s3.evidence_bucket, alerts, "alert_evidence",
                                          f"alert evidence older than {retention.alert_evidence_days:g} days"),
        }
        erased = purge_expired(self.settings, self.actor, audit=self.audit, watchlist=self.watchlist, store=self.store, now=now)
        counts["expired_entries"] = sum(len(e.entry_ids) for e in erased)
        if any(counts.values()):
            log.info("retention sweep deleted %s", counts)
        return counts

    def delete(self, bucket: str, keys: list[str], rule: str, reason: str) -> int:
        return delete_audited(self.audit, self.actor, self.store, bucket, keys, rule, reason)
