"""The ingest service: many kinds of source in one process, each failing alone; backpressure; status and metrics."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import threading
import time
import uuid
from concurrent.futures import Future
from datetime import datetime, timezone

import pytest
from prometheus_client import REGISTRY

from ingest.camera import CameraWorker
from ingest.service import IngestService, read_status
from runtime.settings import CameraSettings, IngestSettings
from schemas.events import FrameEvent
from storage.objects import ObjectStore
from tests.ingest.conftest import free_port, published, with_ingest
from synthetic.footage import make_corrupt_copy, make_pattern_clip

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """4 s of 320x240 at 10 fps (40 frames), a keyframe every second."""
    return make_pattern_clip(tmp_path_factory.mktemp("svc") / "clip.mp4", n_frames=40, fps=10, size=(320, 240))


@pytest.fixture
def http_server(clip):
    """Serves the clip's folder over HTTP."""
    handler = functools.partial(_QuietHandler, directory=str(clip.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_kind_of_source_in_one_process_each_failing_alone(ingest_settings, clip, http_server, tmp_path, monkeypatch):
    run = uuid.uuid4().hex[:6]
    store = ObjectStore(ingest_settings.s3)
    store.ensure_buckets()
    bucket = ingest_settings.s3.footage_bucket
    store.put_bytes(bucket, f"uploads/{run}/clip.mp4", clip.read_bytes(), "video/mp4")
    cut = make_corrupt_copy(clip, tmp_path / "cut.mp4", mode="truncate", at=0.5)
    cams = {
        "file": str(clip),
        "http": f"{http_server}/{clip.name}",
        "s3": f"s3://{bucket}/uploads/{run}/clip.mp4",
        "keyframes": str(clip),
        "hwaccel": str(clip),
        "missing": str(tmp_path / "missing.mp4"),
        "truncated": str(cut),
        "unreachable": f"rtsp://user:secret@127.0.0.1:{free_port()}/x",
    }
    ids = {name: f"{name}-{run}" for name in cams}
    cameras = [CameraSettings(id=ids[name], url=url, mode="keyframes" if name == "keyframes" else "fps",
                              hwaccel=name == "hwaccel" or None) for name, url in cams.items()]
    settings = with_ingest(ingest_settings, reconnect_max_attempts=2, reconnect_initial_s=0.2)
    started = time.monotonic()
    reports = IngestService(settings, cameras).run()
    assert time.monotonic() - started < 30

    for name in ("file", "http", "s3", "hwaccel"):
        assert (reports[ids[name]].state, reports[ids[name]].frames, reports[ids[name]].errors) == ("ended", 20, []), name
    assert (reports[ids["keyframes"]].state, reports[ids["keyframes"]].frames) == ("ended", 4)
    missing, truncated, unreachable = (reports[ids[n]] for n in ("missing", "truncated", "unreachable"))
    assert missing.state == "failed" and "not found" in missing.last_error and str(tmp_path / "missing.mp4") in missing.last_error
    assert truncated.state == "failed" and "truncated" in truncated.last_error and 0 < truncated.frames < 20
    assert unreachable.state == "failed" and unreachable.reconnects == 2
    assert "unreachable: connection refused" in unreachable.errors[0] and "gave up after 2" in unreachable.last_error
    assert "secret" not in json.dumps([vars(r) for r in reports.values()])  # credentials never reach reports

    frames = published(settings, ids.values())
    for name in ("file", "http", "s3", "hwaccel"):
        events = frames[ids[name]]
        assert [e.frame_index for e in events] == list(range(0, 40, 2)), name
        gaps = [(b.source_ts - a.source_ts).total_seconds() for a, b in zip(events, events[1:])]
        assert all(abs(g - 0.2) < 1e-3 for g in gaps), name  # source time carried into every event
        assert all(e.run_id is None and e.image_jpeg[:2] == b"\xff\xd8" for e in events)
    keyframes = frames[ids["keyframes"]]  # one a second, at their own times
    assert [round((e.source_ts - keyframes[0].source_ts).total_seconds(), 3) for e in keyframes] == [0, 1, 2, 3]
    assert len(frames[ids["truncated"]]) == truncated.frames

    assert sample("vigil_camera_state", camera=ids["truncated"], state="failed") == 1
    assert sample("vigil_camera_state", camera=ids["file"], state="ended") == 1
    assert sample("vigil_camera_frames_total", camera=ids["http"]) == 20
    assert sample("vigil_camera_reconnects_total", camera=ids["unreachable"]) == 2
    assert sample("vigil_camera_last_error_info", camera=ids["missing"], error=missing.last_error[:200]) == 1

    # `vigil status` shows the process's cameras, their states and last errors.
    from vigil.cli import main

    monkeypatch.setenv("VIGIL_INGEST__STATUS_DIR", str(settings.ingest.status_dir))
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "home"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["status"]) == 0
    process = json.loads(out.getvalue())["ingest"][0]
    assert not process["running"] and not process["stale"]
    shown = process["cameras"]
    assert shown[ids["file"]]["state"] == "ended" and shown[ids["file"]]["frames"] == 20
    assert shown[ids["truncated"]]["state"] == "failed" and "truncated" in shown[ids["truncated"]]["last_error"]
    assert read_status(settings.ingest)[0]["cameras"].keys() == set(ids.values())


class SlowPublisher:
    """Acknowledges each frame 30 ms after it was sent, one at a time (a slow broker)."""

    def __init__(self):
        self.published: list[int] = []

    def prepare(self, camera_id, frame, position):
        return FrameEvent(camera_id=camera_id, source_ts=frame.source_ts, trace_id=position, frame_index=frame.index,
                          width=frame.width, height=frame.height, image_key="k")

    def send(self, event):
        time.sleep(0.03)
        self.published.append(event.frame_index)
        done = Future()
        done.set_result(None)
        return done


@pytest.mark.parametrize("policy", ["drop_oldest", "wait"])
def test_backpressure_policy_with_a_slow_publisher(policy, clip):
    camera_id = f"slow-{policy}-{uuid.uuid4().hex[:6]}"
    publisher = SlowPublisher()
    published_frames = publisher.published
    settings = IngestSettings(queue_frames=2, file_backpressure=policy, target_fps=10)
    worker = CameraWorker(CameraSettings(id=camera_id, url=str(clip)), settings, publisher=publisher, stop=threading.Event())
    worker.start()
    worker.join(30)
    report = worker.refresh()
    assert report.state == "ended"
    dropped = report.dropped.get("backpressure", 0)
    assert report.frames == len(published_frames) and report.frames + dropped == 40  # every frame published or counted
    assert sample("vigil_camera_dropped_frames_total", camera=camera_id, reason="backpressure") == dropped
    if policy == "wait":
        assert dropped == 0 and published_frames == list(range(40))
    else:
        assert dropped > 0 and published_frames[-1] == 39  # the newest frames survive
        assert published_frames == sorted(published_frames)


def test_camera_ids_must_be_unique(ingest_settings, clip):
    with pytest.raises(ValueError, match="unique"):
        IngestService(ingest_settings, [CameraSettings(id="a", url=str(clip)), CameraSettings(id="a", url=str(clip))])


def test_status_marks_a_silent_running_process_stale(tmp_path):
    settings = IngestSettings(status_dir=tmp_path)
    old = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    (tmp_path / "h-1-a.json").write_text(json.dumps({"running": True, "updated_at": old.isoformat(), "cameras": {}}))
    (tmp_path / "h-2-b.json").write_text(json.dumps({"running": False, "updated_at": old.isoformat(), "cameras": {}}))
    statuses = read_status(settings, now=old.replace(second=30))
    assert [(s["running"], s["stale"]) for s in statuses] == [(True, True), (False, False)]
    assert read_status(settings, now=old.replace(day=3)) == [] and not list(tmp_path.glob("*.json"))  # pruned


class RefusingPublisher(SlowPublisher):
    """Fails the first three sends (a broker that refuses for a while), then acknowledges at once."""

    def __init__(self):
        super().__init__()
        self.failures = 3

    def send(self, event):
        done = Future()
        if self.failures:
            self.failures -= 1
            done.set_exception(ConnectionError("broker unavailable"))
        else:
            self.published.append(event.frame_index)
            done.set_result(None)
        return done


def test_a_send_that_fails_is_sent_again_until_acknowledged(clip):
    publisher = RefusingPublisher()
    settings = IngestSettings(target_fps=10, resend_initial_s=0.01, resend_max_s=0.05)
    worker = CameraWorker(CameraSettings(id=f"refused-{uuid.uuid4().hex[:6]}", url=str(clip)), settings, publisher=publisher,
                          stop=threading.Event())
    worker.start()
    worker.join(30)
    report = worker.refresh()
    assert (report.state, report.sampled, report.frames, report.resends, report.dropped) == ("ended", 40, 40, 3, {})
    assert publisher.published == list(range(40))  # nothing lost, nothing twice, in order
