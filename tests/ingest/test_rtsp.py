"""Live RTSP cameras (GStreamer's server): reconnect after the server dies, isolation, recording to S3."""

from __future__ import annotations

import io
import time
import uuid
from datetime import datetime, timedelta, timezone

import av
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest.archive import FootageArchive
from ingest.service import IngestService
from runtime.settings import CameraSettings
from storage.objects import ObjectStore
from tests.ingest.conftest import ServiceThread, free_port, needs_rtsp, published, wait_for, with_ingest
from synthetic.footage import keyframe_offsets, make_corrupt_copy, make_pattern_clip

pytestmark = [pytest.mark.services, needs_rtsp]


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_reconnects_within_backoff_after_the_server_restarts_while_other_cameras_go_on(
        ingest_settings, rtsp_camera, tmp_path, capsys):
    run = uuid.uuid4().hex[:6]
    flaky_server, steady_server = rtsp_camera(), rtsp_camera()
    clip = make_pattern_clip(tmp_path / "clip.mp4", n_frames=40, fps=10, size=(160, 120))
    garbled = make_corrupt_copy(clip, tmp_path / "garbled.mp4", mode="garble",
                                offset=dict(keyframe_offsets(clip))[2.0])
    truncated = make_corrupt_copy(clip, tmp_path / "truncated.mp4", mode="truncate", at=0.4)
    ids = {name: f"{name}-{run}" for name in ("flaky", "steady", "garbled", "truncated", "unreachable")}
    cameras = [
        CameraSettings(id=ids["flaky"], url=flaky_server.url),  # TCP
        CameraSettings(id=ids["steady"], url=steady_server.url, rtsp_transport="udp"),
        CameraSettings(id=ids["garbled"], url=str(garbled)),
        CameraSettings(id=ids["truncated"], url=str(truncated)),
        CameraSettings(id=ids["unreachable"], url=f"rtsp://127.0.0.1:{free_port()}/nobody"),
    ]
    settings = with_ingest(ingest_settings, target_fps=5)
    with ServiceThread(IngestService(settings, cameras)) as svc:
        flaky, steady = svc.report(ids["flaky"]), svc.report(ids["steady"])
        wait_for(lambda: flaky.frames >= 10 and steady.frames >= 10, 30, "both live cameras to stream")
        # Meanwhile the bad sources failed, each with its own clear error, and took nothing else down.
        garbled_r, truncated_r, unreachable_r = (svc.report(ids[n]) for n in ("garbled", "truncated", "unreachable"))
        wait_for(lambda: garbled_r.state == truncated_r.state == "failed", 10, "the damaged files to fail")
        assert "corrupt data" in garbled_r.last_error and "truncated" in truncated_r.last_error
        assert unreachable_r.state in ("reconnecting", "connecting") and "unreachable" in unreachable_r.last_error

        # The flaky camera's server dies.
        flaky_server.kill()
        killed = time.monotonic()
        wait_for(lambda: flaky.state == "reconnecting", 10, "the loss to be noticed")
        noticed_s = time.monotonic() - killed
        text = svc.metrics()
        assert metric(text, "vigil_camera_state", camera=ids["flaky"], state="reconnecting") == 1
        assert metric(text, "vigil_camera_up", camera=ids["flaky"]) == 0
        time.sleep(3.0)  # long enough for the backoff to reach its cap
        steady_during = steady.frames
        worker = svc.service.workers[ids["flaky"]]
        bound_s = worker.backoff.bound(max(worker.backoff.attempt - 1, 0))  # the wait in progress never exceeds this
        restarted_at = datetime.now(timezone.utc)
        flaky_server.start()
        restarted = time.monotonic()
        # A frame captured after the restart acknowledged (frames count on acknowledgement: older ones may still arrive).
        wait_for(lambda: flaky.last_source_ts and datetime.fromisoformat(flaky.last_source_ts) > restarted_at, 30,
                 "frames after the restart", every_s=0.01)
        reconnect_s = time.monotonic() - restarted
        outage_s = time.monotonic() - killed
        wait_for(lambda: steady.frames >= steady_during + 5, 10, "the steady camera to keep streaming")
        text = svc.metrics()
        assert flaky.state == "streaming" and flaky.reconnects >= 2
        assert metric(text, "vigil_camera_state", camera=ids["flaky"], state="streaming") == 1
        assert metric(text, "vigil_camera_outages_total", camera=ids["flaky"]) == 1
        assert metric(text, "vigil_camera_reconnects_total", camera=ids["flaky"]) == flaky.reconnects
        assert outage_s - 1.0 <= metric(text, "vigil_camera_outage_seconds", camera=ids["flaky"]) <= outage_s
        assert metric(text, "vigil_camera_outages_total", camera=ids["steady"]) == 0
        assert steady.state == "streaming"
    with capsys.disabled():
        print(f"\n  RTSP reconnect: loss noticed in {noticed_s * 1000:.0f} ms; frames again {reconnect_s:.2f}s after the server "
              f"restarted (backoff bound {bound_s:.1f}s, cap {settings.ingest.reconnect_max_s:.1f}s); outage {outage_s:.2f}s")
    # Within the backoff bound, plus the time RTSP needs to set up a session and probe the stream.
    assert reconnect_s <= bound_s + 2.0
    assert svc.join()[ids["flaky"]].state == "ended"

    frames = published(settings, [ids["flaky"]])[ids["flaky"]]
    gaps = [(b.source_ts - a.source_ts).total_seconds() for a, b in zip(frames, frames[1:])]
    assert all(g > 0 for g in gaps)
    assert max(gaps) == pytest.approx(outage_s, abs=1.5)  # the one gap is the outage; capture times resume after it
    assert sum(g > 1.0 for g in gaps) == 1


def test_recorded_rtsp_segments_play_back_and_cover_the_stream(ingest_settings, rtsp_camera):
    camera_id = f"rec-{uuid.uuid4().hex[:6]}"
    server = rtsp_camera()
    settings = with_ingest(ingest_settings, record=True, segment_s=2.0, target_fps=5)
    with ServiceThread(IngestService(settings, [CameraSettings(id=camera_id, url=server.url)])) as svc:
        report = svc.report(camera_id)
        wait_for(lambda: report.frames >= 35, 30, "7 s of frames")
    svc.join()
    frames = published(settings, [camera_id])[camera_id]
    archive = FootageArchive(ObjectStore(settings.s3))
    first, last = frames[0].source_ts, frames[-1].source_ts
    segments = archive.segments(camera_id, first - timedelta(seconds=5), last + timedelta(seconds=5))
    assert len(segments) >= 3 and report.segments == len(segments)
    # Recording starts at the first keyframe with a time (the GOP is 1 s) and ends with the last frame.
    assert segments[0].start <= first + timedelta(seconds=1.1) and segments[-1].end >= last
    for a, b in zip(segments, segments[1:]):
        assert timedelta(seconds=-0.2) <= b.start - a.end <= timedelta(seconds=settings.ingest.segment_s)
    for segment in segments:
        data = archive.store.get_bytes(archive.bucket, segment.key)
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            decoded = [f for f in container.decode(stream)]
        assert decoded and decoded[0].key_frame
        span = float((decoded[-1].pts - decoded[0].pts) * stream.time_base)
        # The last frame lasts 0.04 s; the segment in which the live clock switched to RTCP is stretched by that step.
        assert span == pytest.approx((segment.end - segment.start).total_seconds(), abs=0.3)
    # Every published frame from then on lies in a recorded segment (a live clock may sit a few ms off).
    for frame in (f for f in frames if f.source_ts >= segments[0].start):
        assert any(s.start - timedelta(seconds=0.1) <= frame.source_ts < s.end + timedelta(seconds=0.1) for s in segments)

