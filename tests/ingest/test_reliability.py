"""Ingest under faults: derived frame ids and times that a rerun repeats, nothing lost while the broker is paused,
FFmpeg held to what a camera recording is, camera ids that cannot name a path."""

from __future__ import annotations

import signal
import stat
import time
import uuid
from datetime import datetime, timedelta, timezone

import av
import pytest

from ingest.service import IngestService, camera_from_source
from ingest.source import SourceError, sample_frames
from runtime.settings import CameraSettings
from synthetic.footage import make_pattern_clip
from tests.ingest.conftest import ServiceThread, published, tansu_available, tansu_broker, wait_for, with_ingest

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A 4 s clip (10 fps, 40 frames), the same as MPEG-TS, an HLS playlist and a concat list that both name it."""
    folder = tmp_path_factory.mktemp("media")
    clip = make_pattern_clip(folder / "clip.mp4", n_frames=40, fps=10, size=(160, 120))
    segment = make_pattern_clip(folder / "segment.ts", n_frames=40, fps=10, size=(160, 120))
    playlist = folder / "playlist.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\n{segment}\n#EXT-X-ENDLIST\n")
    concat = folder / "list.ffconcat"
    concat.write_text("ffconcat version 1.0\nfile 'clip.mp4'\n")  # relative: FFmpeg's own "safe" mode allows it
    return {"clip": clip, "playlist": playlist, "concat": concat}


@pytest.mark.services
def test_a_rerun_in_the_same_run_publishes_the_same_frames(ingest_settings, media, tmp_path):
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    camera = CameraSettings(id=f"rerun-{run_id}", url=str(media["clip"]))
    settings = with_ingest(ingest_settings, run_id=run_id, run_started_at=T0, report_path=tmp_path / "report.json")
    for _ in range(2):
        reports = IngestService(settings, [camera]).run()
        assert (reports[camera.id].sampled, reports[camera.id].frames, reports[camera.id].dropped) == (20, 20, {})
    report_file = settings.ingest.report_path
    assert stat.S_IMODE(report_file.stat().st_mode) == 0o600
    assert not [p for p in report_file.parent.iterdir() if p.name.endswith(".tmp")]

    events = published(settings, [camera.id])[camera.id]
    first, second = events[:20], events[20:]
    assert [(e.event_id, e.trace_id, e.source_ts) for e in first] == [(e.event_id, e.trace_id, e.source_ts) for e in second]
    assert len({e.event_id for e in first}) == 20
    assert [e.source_ts for e in first] == [T0 + i * timedelta(seconds=0.2) for i in range(20)]

    # Another run, or the same run started at another time, gives other ids.
    other = with_ingest(settings, run_id=f"{run_id}-b")
    IngestService(other, [camera]).run()
    later = published(settings, [camera.id])[camera.id][40:]
    assert len(later) == 20 and not {e.event_id for e in later} & {e.event_id for e in first}


@pytest.mark.services
@pytest.mark.skipif(not tansu_available(), reason="needs the Tansu broker binary (vigil up installs it)")
def test_a_file_loses_nothing_while_the_broker_is_paused(ingest_settings, tmp_path):
    clip = make_pattern_clip(tmp_path / "long.mp4", n_frames=100, fps=10, size=(160, 120))  # 10 s: 50 frames at 5 fps
    brokers = []
    with tansu_broker(tmp_path, processes=brokers) as kafka:
        settings = with_ingest(ingest_settings.model_copy(update={"kafka": kafka}), realtime=True, queue_frames=4,
                               max_unacked_frames=4, send_timeout_s=3, resend_initial_s=0.2, resend_max_s=2)
        camera = CameraSettings(id=f"paused-{uuid.uuid4().hex[:6]}", url=str(clip))
        service = IngestService(settings, [camera])
        with ServiceThread(service) as svc:
            wait_for(lambda: svc.report(camera.id).frames >= 5, 30, "the first frames")
            brokers[0].send_signal(signal.SIGSTOP)
            try:
                time.sleep(20)
                report = svc.report(camera.id)
                assert report.frames < report.sampled < 50  # unacknowledged frames held back, and decoding waited
            finally:
                brokers[0].send_signal(signal.SIGCONT)
            reports = svc.join(120)
        report = reports[camera.id]
        assert (report.state, report.sampled, report.frames, report.dropped) == ("ended", 50, 50, {})
        events = published(settings, [camera.id])[camera.id]
    assert len(events) == 50 and len({e.event_id for e in events}) == 50  # each frame once: no gap, no duplicate
    assert sorted(e.frame_index for e in events) == list(range(0, 100, 2))


@pytest.mark.services
def test_playlists_and_concat_lists_named_as_files_are_refused(ingest_settings, media):
    # Without the whitelists FFmpeg follows both to the local file they name: the attack is real.
    for name in ("playlist", "concat"):
        with av.open(str(media[name])) as container:
            assert sum(1 for _ in container.decode(video=0)) == 40, name
    with pytest.raises(SourceError, match="refused: it is an HLS playlist"):
        sample_frames(str(media["playlist"]), 5)
    with pytest.raises(SourceError, match="refused: it is a concat list"):
        sample_frames(str(media["concat"]), 5)

    run = uuid.uuid4().hex[:6]
    cameras = [CameraSettings(id=f"{name}-{run}", url=str(media[name])) for name in ("playlist", "concat", "clip")]
    reports = IngestService(ingest_settings, cameras).run()
    for name in ("playlist", "concat"):
        report = reports[f"{name}-{run}"]
        assert report.state == "failed" and report.frames == 0 and "refused" in report.last_error, name
    assert (reports[f"clip-{run}"].state, reports[f"clip-{run}"].frames) == ("ended", 20)  # the others go on


def test_each_kind_of_source_may_open_only_its_own_protocols(tmp_path):
    refusals = {
        f"file://{tmp_path}/x.mp4": "not found",  # file:// is a local path
        "gopher://127.0.0.1/x": "unsupported URL scheme 'gopher'",
        "concat:/etc/passwd": "refused: FFmpeg would need a container or a protocol",  # a path to FFmpeg's concat protocol
    }
    for url, cause in refusals.items():
        with pytest.raises(SourceError, match=cause):
            sample_frames(url, 5)


def test_ingest_downscales_frames_past_the_pixel_cap(media):
    frames = list(sample_frames(str(media["clip"]), 5, max_pixels=4800))
    height, width = frames[0].image.shape[:2]
    assert width * height <= 4800 and abs(width / height - 160 / 120) < 0.05


@pytest.mark.parametrize(("source", "camera_id"), [
    ("/footage/lobby cam (2).mp4", "lobby-cam--2-"),
    ("/footage/..hidden..mp4", "hidden."),
    ("/footage/a..b.mkv", "a-b"),
    ("rtsp://10.0.0.5/live/entrance?token=x", "entrance"),
    ("/footage/" + "x" * 300 + ".mp4", "x" * 128),
    ("gate=rtsp://10.0.0.5/live", "gate"),
])
def test_camera_ids_from_sources_are_safe(source, camera_id):
    assert camera_from_source(source).id == camera_id


@pytest.mark.parametrize("unsafe", ["../etc", "a/b", "a..b", "", "x" * 129, "-lead", "with space"])
def test_unsafe_camera_ids_are_refused(unsafe):
    with pytest.raises(ValueError, match="is not allowed"):
        CameraSettings(id=unsafe, url="/footage/a.mp4")
    with pytest.raises(ValueError, match="is not allowed"):
        camera_from_source(f"{unsafe}=/footage/a.mp4")
