"""Footage in S3: the key is the index (camera, hour, start, end); lookups by moment and window; retention by age."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from ingest.archive import (
    FootageArchive,
    Segment,
    footage_url,
    parse_footage_url,
    parse_segment_key,
    parse_ts,
    segment_key,
    split_s3_url,
)
from storage.objects import ObjectStore

T0 = datetime(2024, 5, 1, 12, 59, 55, tzinfo=timezone.utc)


def test_keys_round_trip_and_sort_in_time_order():
    end = T0 + timedelta(seconds=10, microseconds=250)
    key = segment_key("lobby", T0, end)
    assert key == "segments/lobby/2024/05/01/12/20240501T125955.000000Z_20240501T130005.000250Z.mp4"
    assert parse_segment_key(key) == Segment("lobby", T0, end, key)
    assert parse_segment_key("segments/lobby/notes.txt") is None
    later = segment_key("lobby", end, end + timedelta(seconds=10))
    assert sorted([later, key]) == [key, later]


def test_footage_urls_and_times():
    url = footage_url("cam 1", T0, T0 + timedelta(minutes=5))
    assert parse_footage_url(url) == ("cam 1", T0, T0 + timedelta(minutes=5))
    assert parse_ts("2024-05-01T12:59:55") == T0 == parse_ts("2024-05-01T14:59:55+02:00")
    with pytest.raises(ValueError, match="from < to"):
        parse_footage_url(footage_url("cam", T0, T0))
    assert split_s3_url("s3://footage/a/b%20c.mp4") == ("footage", "a/b c.mp4")
    with pytest.raises(ValueError):
        split_s3_url("s3://bucket-only")


@pytest.mark.services
def test_lookup_by_moment_and_window_across_an_hour(stack, tmp_path):
    store = ObjectStore(stack.settings.s3)
    store.ensure_buckets()
    archive = FootageArchive(store)
    camera = f"cam-{uuid.uuid4().hex[:8]}"
    blob = tmp_path / "seg.mp4"
    blob.write_bytes(b"not really a video")
    # Three 4 s segments up to 13:00:03, the last across the hour, then a gap of 20 s and one more.
    starts = [T0 - timedelta(seconds=4), T0, T0 + timedelta(seconds=4), T0 + timedelta(seconds=28)]
    for start in starts:
        archive.put(camera, start, start + timedelta(seconds=4), blob, frames=40)
    inside = archive.segment_at(camera, datetime(2024, 5, 1, 13, 0, 2, tzinfo=timezone.utc))
    assert inside is not None and inside.start == starts[2] and inside.key.startswith(f"segments/{camera}/2024/05/01/12/")
    assert archive.segment_at(camera, starts[1]).start == starts[1]  # start is inclusive
    assert archive.segment_at(camera, T0 + timedelta(seconds=20)) is None  # the gap
    window = archive.segments(camera, T0 - timedelta(seconds=1), T0 + timedelta(seconds=29))
    assert [s.start for s in window] == starts
    assert [s.start for s in archive.segments(camera, T0 + timedelta(seconds=10), T0 + timedelta(seconds=20))] == []
    meta = store.client.stat_object(archive.bucket, window[0].key).metadata
    assert meta.get("x-amz-meta-frames") == "40" and meta.get("x-amz-meta-camera") == camera


@pytest.mark.services
def test_retention_deletes_old_segments_of_every_recorded_camera_with_an_audit_event(stack, tmp_path):
    from accountability.audit import AuditLog
    from tests.accountability_helpers import TESTER, audit_requests

    store = ObjectStore(stack.settings.s3)
    bucket = f"test-footage-{uuid.uuid4().hex[:8]}"  # a bucket of its own: every camera in it is swept
    store.client.make_bucket(bucket)
    archive = FootageArchive(store, bucket)
    mine, unconfigured = (f"cam-{uuid.uuid4().hex[:8]}" for _ in range(2))
    blob = tmp_path / "seg.mp4"
    blob.write_bytes(b"x")
    now = datetime.now(timezone.utc)
    for camera in (mine, unconfigured):
        for age_h in (80, 73, 71, 1):
            start = now - timedelta(hours=age_h)
            archive.put(camera, start, start + timedelta(seconds=10), blob, frames=1)
    assert len(archive.expired(timedelta(hours=72), now, camera_ids=[mine])) == 2
    began = datetime.now(timezone.utc)
    with AuditLog(stack.settings) as audit:
        assert archive.enforce_retention(timedelta(hours=72), audit=audit, actor=TESTER, now=now) == 4
    for camera in (mine, unconfigured):  # a camera no ingest is configured with any more is swept too
        left = archive.segments(camera, now - timedelta(hours=100), now)
        assert [round((now - s.start) / timedelta(hours=1)) for s in left] == [71, 1]
    (event,) = audit_requests(stack.settings, began, action="retention_delete", subject=f"s3://{bucket}")
    assert event.details == {"rule": "footage", "bucket": bucket, "objects": 4, "via": "test"}  # counts, never a face
