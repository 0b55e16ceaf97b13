"""Recorded footage in S3: where segments live, how to find the one that holds a moment, and retention.

Layout (footage bucket)::

    segments/<camera>/<YYYY>/<MM>/<DD>/<HH>/<start>_<end>.mp4

``start`` and ``end`` are the segment's first frame and the end of its last
frame on the camera's clock (the ``source_ts`` its frames were published with),
UTC, as ``20240501T120000.000000Z``; the hour folders are the start's. The key
*is* the index: ``segment_at(camera, ts)`` lists at most two hour folders to
find the segment an alert (``camera_id``, ``source_ts``) points at, and
``segments(camera, t1, t2)`` lists what a replay needs. Each object also
carries its times and frame count as S3 metadata.

``footage://CAMERA?from=T1&to=T2`` names such a window as a source that
ingest can read (``vigil replay`` does): the segments in order, each stamped
with its own start time, frames outside the window left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from accountability.actors import Actor
from accountability.audit import AuditLog
from accountability.retention import delete_audited
from schemas.events import as_utc, parse_time
from storage.objects import ObjectStore, evidence_key

log = logging.getLogger(__name__)

PREFIX = "segments"
FOOTAGE_SCHEME = "footage"
_TS_FORMAT = "%Y%m%dT%H%M%S.%fZ"
# A segment is found from any hour folder up to this far back from a moment it holds.
LOOKBACK = timedelta(hours=1)


def format_ts(ts: datetime) -> str:
    return as_utc(ts).strftime(_TS_FORMAT)


def parse_ts(text: str) -> datetime:
    """A segment key's ``20240501T120000.000000Z``, or any time ``schemas.events.parse_time`` reads."""
    try:
        return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return parse_time(text)


@dataclass(frozen=True)
class Segment:
    camera_id: str
    start: datetime
    end: datetime
    key: str

    def contains(self, ts: datetime) -> bool:
        return self.start <= as_utc(ts) < self.end

    def overlaps(self, t1: datetime, t2: datetime) -> bool:
        return self.start < as_utc(t2) and as_utc(t1) < self.end


def segment_key(camera_id: str, start: datetime, end: datetime) -> str:
    return evidence_key(PREFIX, camera_id, start, f"{format_ts(start)}_{format_ts(end)}.mp4")


def parse_segment_key(key: str) -> Segment | None:
    """The segment a key names, or None for a key that is not one."""
    parts = key.split("/")
    if len(parts) != 7 or parts[0] != PREFIX or not parts[-1].endswith(".mp4"):
        return None
    try:
        start, end = (datetime.strptime(t, _TS_FORMAT).replace(tzinfo=timezone.utc)
                      for t in parts[-1][: -len(".mp4")].split("_"))
    except ValueError:
        return None
    return Segment(parts[1], start, end, key)


def _hours(t1: datetime, t2: datetime) -> list[datetime]:
    hour = as_utc(t1).replace(minute=0, second=0, microsecond=0)
    out = []
    while hour <= as_utc(t2):
        out.append(hour)
        hour += timedelta(hours=1)
    return out


class FootageArchive:
    """The footage bucket seen as per-camera timelines of segments."""

    def __init__(self, store: ObjectStore, bucket: str | None = None):
        self.store = store
        self.bucket = bucket or store.settings.footage_bucket

    def put(self, camera_id: str, start: datetime, end: datetime, path: Path, *, frames: int) -> Segment:
        key = segment_key(camera_id, start, end)
        metadata = {"camera": camera_id, "start": as_utc(start).isoformat(), "end": as_utc(end).isoformat(), "frames": str(frames)}
        self.store.put_bytes(self.bucket, key, Path(path).read_bytes(), "video/mp4", metadata=metadata)
        return Segment(camera_id, as_utc(start), as_utc(end), key)

    def segments(self, camera_id: str, t1: datetime, t2: datetime) -> list[Segment]:
        """Segments of ``camera_id`` overlapping [t1, t2), in time order."""
        found: list[Segment] = []
        for hour in _hours(as_utc(t1) - LOOKBACK, t2):
            for key in self.store.list_keys(self.bucket, f"{PREFIX}/{camera_id}/{hour:%Y/%m/%d/%H}/"):
                segment = parse_segment_key(key)
                if segment is not None and segment.overlaps(t1, t2):
                    found.append(segment)
        return sorted(found, key=lambda s: (s.start, s.end))

    def segment_at(self, camera_id: str, ts: datetime) -> Segment | None:
        """The segment holding ``ts`` on ``camera_id``'s clock (an alert's camera and source time), or None."""
        holding = [s for s in self.segments(camera_id, ts, ts + timedelta(microseconds=1)) if s.contains(ts)]
        return holding[-1] if holding else None

    def url(self, segment: Segment, expires: timedelta = timedelta(minutes=30)) -> str:
        """A presigned GET URL of the segment (what FFmpeg opens)."""
        return presigned_url(self.store, self.bucket, segment.key, expires)

    def expired(self, max_age: timedelta, now: datetime | None = None, camera_ids: list[str] | None = None) -> list[str]:
        """Keys of the segments that ended more than ``max_age`` ago: of these cameras, or (None) of every camera
        recorded in the bucket, configured or not."""
        cutoff = as_utc(now or datetime.now(timezone.utc)) - max_age
        prefixes = [f"{PREFIX}/{c}/" for c in camera_ids] if camera_ids is not None else [f"{PREFIX}/"]
        return [s.key for prefix in prefixes for s in map(parse_segment_key, self.store.list_keys(self.bucket, prefix))
                if s is not None and s.end < cutoff]

    def enforce_retention(self, max_age: timedelta, *, audit: AuditLog, actor: Actor, now: datetime | None = None,
                          camera_ids: list[str] | None = None) -> int:
        """Delete the expired segments (see ``expired``) after a ``retention_delete`` audit event counting them."""
        old = self.expired(max_age, now, camera_ids)
        deleted = delete_audited(audit, actor, self.store, self.bucket, old, "footage",
                                 f"footage segments older than {max_age.total_seconds() / 3600:g} h")
        if deleted:
            log.info("footage retention: deleted %d segment(s) older than %s", deleted, max_age)
        return deleted


def presigned_url(store: ObjectStore, bucket: str, key: str, expires: timedelta = timedelta(minutes=30)) -> str:
    return store.client.presigned_get_object(bucket, key, expires=expires)


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    parts = urlsplit(url)
    key = unquote(parts.path.lstrip("/"))
    if parts.scheme != "s3" or not parts.netloc or not key:
        raise ValueError(f"expected s3://BUCKET/KEY, got {url!r}")
    return parts.netloc, key


def footage_url(camera_id: str, t1: datetime, t2: datetime) -> str:
    """The source URL of camera ``camera_id``'s recorded footage in [t1, t2)."""
    return f"{FOOTAGE_SCHEME}://{quote(camera_id, safe='')}?{urlencode({'from': format_ts(t1), 'to': format_ts(t2)})}"


def parse_footage_url(url: str) -> tuple[str, datetime, datetime]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if parts.scheme != FOOTAGE_SCHEME or not parts.netloc or "from" not in query or "to" not in query:
        raise ValueError(f"expected {FOOTAGE_SCHEME}://CAMERA?from=T1&to=T2, got {url!r}")
    t1, t2 = parse_ts(query["from"][0]), parse_ts(query["to"][0])
    if not t1 < t2:
        raise ValueError(f"footage window must have from < to, got {url!r}")
    return unquote(parts.netloc), t1, t2
