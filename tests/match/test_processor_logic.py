"""MatchProcessor's tracking, decisions, retry behaviour, deployment gating and forgetting, with the watchlist, S3, the
deployments table and the audit log replaced by fakes.

(tests/match/test_processor.py runs it against the real Milvus and S3.)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from match.decision import alert_id, track_id
from match.stage import MatchProcessor
from match.state import camera_state
from runtime.settings import MatchSettings, VigilSettings
from schemas.events import AlertEvent, DeploymentEvent, EmbeddingEvent, TrackEndedEvent
from schemas.topics import ALERTS, MATCH_STATE, TRACKS
from storage.objects import ObjectNotFound
from storage.vectors import Hit

T0 = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
RNG = np.random.default_rng(3)


def unit(v):
    return v / np.linalg.norm(v)


ALICE, STRANGER = unit(RNG.normal(size=512)), unit(RNG.normal(size=512))
# alice's enrolled template: a face of hers scores about 0.7 against it.
TEMPLATE = unit(0.7 * ALICE + 0.714 * unit(RNG.normal(size=512)))


class FakeWatchlist:
    """Scores each query against fixed templates (cosine), as Milvus would."""

    def __init__(self, templates: dict[str, np.ndarray]):
        self.templates = templates
        self.calls = 0

    def search(self, vectors, limit=1, consistency_level="Strong", *, persons=None, now=None):
        self.calls += 1
        rows = []
        for v in np.asarray(vectors, dtype=np.float64):
            hits = sorted((Hit(person, float(np.dot(unit(v), t)), i) for i, (person, t) in enumerate(self.templates.items())
                           if persons is None or person in persons), key=lambda h: -h.score)
            rows.append(hits[:limit])
        return rows


class FakeStore:
    def __init__(self):
        self.copies: list[tuple[str, str]] = []
        self.deleted: list[str] = []
        self.fail = False
        self.gone: set[str] = set()

    def copy(self, bucket, src, dst):
        if self.fail:
            raise ConnectionError("S3 is down")
        if src in self.gone:
            raise ObjectNotFound("The specified key does not exist.", bucket, src, "NoSuchKey")
        self.copies.append((src, dst))

    def delete(self, bucket, keys):
        self.deleted += keys
        return len(keys)


class FakeAudit:
    def __init__(self):
        self.events: list[tuple] = []

    def append(self, actor, action, subject, reason, details=None, **kwargs):
        self.events.append((action, details))


def deployment(persons=None) -> DeploymentEvent:
    return DeploymentEvent(camera_id="deployments", source_ts=T0, trace_id="t", deployment_id="dep-1", case="case-9",
                           purpose="test", authorised_by="ann", kind="live", cameras=["cam-a", "cam-b"], starts_at=T0,
                           ends_at=T0 + timedelta(hours=1), persons=persons, watchlist_digest="0" * 64)


class FakeTable:
    """One deployment that covers every camera but those ``outside``."""

    def __init__(self, outside=(), persons=None):
        self.outside, self.deployment = set(outside), deployment(persons)
        self.runs_over: set[str] = set()

    def run_over(self, run_id):
        return run_id in self.runs_over

    def covering(self, camera_id, ts, run_id):
        return [] if camera_id in self.outside else [self.deployment]


def embedding(i: int, vector, *, camera="cam-a", t=None, x=100.0, run_id=None) -> EmbeddingEvent:
    noisy = unit(vector + np.random.default_rng(i).normal(scale=0.02, size=512))  # the same event for the same i
    return EmbeddingEvent(
        camera_id=camera, source_ts=T0 + timedelta(seconds=i / 6 if t is None else t), trace_id=f"trace-{i}", run_id=run_id,
        face_event_id=f"frame{i}-f0", frame_event_id=f"frame{i}", face_index=0,
        box={"x1": x, "y1": 50, "x2": x + 80, "y2": 140}, det_prob=0.99, crop_key=f"transient/crop{i}.jpg",
        snapshot_key=f"transient/snap{i}.jpg", model="test", embedding=noisy.tolist(), quality=0.9,
    )


def processor(outside=(), persons=None, **match) -> MatchProcessor:
    settings = VigilSettings(match=MatchSettings(**match))
    proc = MatchProcessor(settings)
    proc.watchlist = FakeWatchlist({"alice": TEMPLATE})  # nobody else is enrolled
    proc.store = FakeStore()
    proc.deployments = FakeTable(outside, persons)
    proc.audit = FakeAudit()
    return proc


def alerts(outputs):
    return [e for spec, e in outputs if spec is ALERTS]


def tracks(proc: MatchProcessor, key=(None, "cam-a")):
    return proc.cameras[key].tracks if key in proc.cameras else ()


def test_one_alert_per_track_with_the_best_face_as_evidence():
    proc = processor()
    events = [embedding(i, ALICE, x=60 + 30 * i) for i in range(12)]
    outputs = proc.process(events[:6]) + proc.process(events[6:])
    assert [spec for spec, _ in outputs] == [ALERTS]
    alert: AlertEvent = outputs[0][1]
    tid = track_id(None, "cam-a", events[0].face_event_id)
    assert alert.track_id == tid and alert.alert_id == alert.event_id == alert_id(tid, "alice")
    assert alert.track_faces == 2 and alert.track_score >= 0.5 and alert.score >= alert.track_score - 1e-9
    best = next(e for e in events[:2] if e.face_event_id == alert.face_event_id)  # the better of the first two faces
    assert (alert.source_ts, alert.trace_id, alert.box) == (best.source_ts, best.trace_id, best.box)
    assert proc.store.copies == [(best.snapshot_key, alert.snapshot_key), (best.crop_key, alert.crop_key)]
    assert alert.crop_key.startswith("alerts/cam-a/2026/01/01/") and alert.crop_key.endswith(f"{alert.alert_id}-crop.jpg")
    (track,) = tracks(proc)
    assert track.faces == 12 and track.alerted == ("alice",)


def test_a_stranger_raises_nothing_and_its_track_end_is_published():
    proc = processor()
    outputs = proc.process([embedding(i, STRANGER) for i in range(8)])
    assert outputs == []
    later = embedding(100, ALICE, t=10.0)  # the camera's next face, past the gap
    outputs = proc.process([later])
    assert [spec for spec, _ in outputs] == [TRACKS]
    ended: TrackEndedEvent = outputs[0][1]
    assert ended.track_id == track_id(None, "cam-a", "frame0-f0") and ended.event_id == f"{ended.track_id}-end"
    assert (ended.reason, ended.faces, ended.alerted_person_ids) == ("gap", 8, [])
    assert ended.started_at == T0 and ended.source_ts == T0 + timedelta(seconds=7 / 6)
    assert ended.first_face_event_id == "frame0-f0" and ended.last_face_event_id == "frame7-f0" and ended.trace_id == "trace-7"
    TRACKS.decode(TRACKS.encode(ended))  # a valid payload of its topic


def test_a_batch_that_fails_part_way_leaves_no_trace_and_its_retry_gives_the_same_outputs():
    proc = processor()
    proc.process([embedding(0, ALICE)])
    before = tracks(proc)
    batch = [embedding(1, ALICE), embedding(2, ALICE)]
    proc.store.fail = True
    with pytest.raises(ConnectionError):
        proc.process(batch)
    assert tracks(proc) is before and "frame1-f0" not in proc.cameras[(None, "cam-a")].applied
    proc.store.fail = False
    outputs = proc.process(batch)
    # The same as a processor that never failed.
    reference = processor()
    expected = reference.process([embedding(0, ALICE)]) + reference.process(batch)
    assert [(s, e.event_id, e.model_dump(exclude={"produced_at"})) for s, e in outputs] == \
        [(s, e.event_id, e.model_dump(exclude={"produced_at"})) for s, e in expected]
    assert [a.alert_id for a in alerts(outputs)] == [alert_id(track_id(None, "cam-a", "frame0-f0"), "alice")]
    assert tracks(proc)[0].faces == 3


def test_a_redelivered_face_is_not_applied_twice():
    proc = processor()
    events = [embedding(i, ALICE) for i in range(3)]
    assert len(alerts(proc.process(events))) == 1
    searches = proc.watchlist.calls
    # A crash after the state was written and before the commit redelivers the batch: its outputs were delivered.
    assert proc.process(events) == []
    assert tracks(proc)[0].faces == 3 and proc.watchlist.calls == searches  # not applied, not searched
    dup = proc.process([embedding(3, ALICE), embedding(3, ALICE)])  # a duplicate within a batch
    assert dup == [] and tracks(proc)[0].faces == 4
    assert proc.process([embedding(1, ALICE)]) == [] and tracks(proc)[0].faces == 4  # captured before the latest: applied


def restart(proc: MatchProcessor) -> MatchProcessor:
    """A new instance that reads what ``proc`` wrote to the changelog (through the topic's own encoding)."""
    fresh = processor()
    for spec, event in proc.checkpoint():
        assert spec is MATCH_STATE
        event = MATCH_STATE.decode(MATCH_STATE.encode(event))
        fresh.restored[(event.run_id, event.camera_id)] = camera_state(event)
    return fresh


def test_a_restarted_or_rebalanced_match_carries_the_same_tracks_and_alert_ids_on():
    events = [embedding(i, ALICE, x=60 + 10 * i) for i in range(8)]
    uninterrupted = processor()
    expected = [uninterrupted.process([e]) for e in events]
    for cut in range(1, len(events)):  # the instance changes after every possible face
        first = processor()
        got = [first.process([e]) for e in events[:cut]]
        second = restart(first)
        assert second.process(events[cut - 1:cut]) == []  # the last batch redelivered (not committed): applied already
        got += [second.process([e]) for e in events[cut:]]
        assert [[(s, e.model_dump(exclude={"produced_at"})) for s, e in batch] for batch in got] == \
            [[(s, e.model_dump(exclude={"produced_at"})) for s, e in batch] for batch in expected]
        (a, b) = tracks(second), tracks(uninterrupted)
        assert len(a) == len(b) == 1 and a[0].track_id == b[0].track_id and a[0].faces == b[0].faces
        assert np.array_equal(a[0].embedding_sum, b[0].embedding_sum) and a[0].persons == b[0].persons


def test_only_cameras_that_changed_are_checkpointed_and_an_ended_track_empties_its_state():
    proc = processor()
    proc.process([embedding(0, ALICE), embedding(1, ALICE, camera="cam-b")])
    assert sorted(e.camera_id for _, e in proc.checkpoint()) == ["cam-a", "cam-b"]
    assert proc.checkpoint() == []
    proc.process([embedding(2, ALICE)])
    (state,) = [e for _, e in proc.checkpoint()]
    assert state.camera_id == "cam-a" and len(state.tracks) == 1 and state.applied == ["frame0-f0", "frame2-f0"]
    proc._end_quiet_tracks(0.0)
    proc.process([])
    assert sorted((e.camera_id, len(e.tracks)) for _, e in proc.checkpoint()) == [("cam-a", 0), ("cam-b", 0)]


def test_an_alert_whose_evidence_is_gone_is_raised_and_says_so():
    proc = processor()
    events = [embedding(i, ALICE) for i in range(3)]
    proc.store.gone = {e.snapshot_key for e in events}
    (alert,) = alerts(proc.process(events))
    assert alert.evidence_missing == ["snapshot"] and [dst for _, dst in proc.store.copies] == [alert.crop_key]


def test_cameras_and_runs_keep_separate_tracks():
    proc = processor()
    batch = [embedding(i, ALICE, camera=cam, run_id=run) for i in range(2) for cam, run in
             [("cam-a", None), ("cam-b", None), ("cam-a", "replay-1")]]
    got = alerts(proc.process(batch))
    assert sorted(((a.camera_id, a.run_id) for a in got), key=str) == sorted([("cam-a", None), ("cam-b", None), ("cam-a", "replay-1")], key=str)
    assert len({a.track_id for a in got}) == 3


def test_min_track_faces_one_alerts_on_the_first_face():
    proc = processor(min_track_faces=1)
    outputs = proc.process([embedding(0, ALICE), embedding(1, ALICE)])
    assert len(alerts(outputs)) == 1 and alerts(outputs)[0].track_faces == 1


def test_alerts_name_their_deployment_and_case():
    (alert,) = alerts(processor().process([embedding(i, ALICE) for i in range(3)]))
    assert (alert.deployment_id, alert.case) == ("dep-1", "case-9")


def test_outside_every_deployment_a_face_is_not_searched_and_its_evidence_is_forgotten():
    proc = processor(outside={"cam-a"})
    events = [embedding(i, ALICE) for i in range(4)]
    assert proc.process(events) == [] and proc.watchlist.calls == 0 and tracks(proc) == ()
    proc._delete_due(everything=True)
    assert sorted(proc.store.deleted) == sorted(k for e in events for k in (e.crop_key, e.snapshot_key))
    assert proc.audit.events == [("retention_delete", {"rule": "passerby", "bucket": "vigil-evidence", "objects": 8})]


def test_only_the_deployments_persons_can_match():
    assert alerts(processor(persons=["bob"]).process([embedding(i, ALICE) for i in range(4)])) == []
    assert len(alerts(processor(persons=["alice"]).process([embedding(i, ALICE) for i in range(4)]))) == 1


def test_an_ended_track_forgets_its_crops_and_the_frames_no_open_track_holds():
    proc = processor()
    stranger = [embedding(i, STRANGER) for i in range(3)]
    shared = embedding(3, ALICE, t=10.0, x=400.0).model_copy(update={"snapshot_key": stranger[2].snapshot_key})
    proc.process(stranger)
    proc.process([shared])  # past the gap: the stranger's track ends; alice's face shares the stranger's last frame
    proc._delete_due(everything=True)
    kept = {shared.crop_key, shared.snapshot_key}  # alice's track is open and holds that frame
    assert sorted(proc.store.deleted) == sorted({k for e in stranger for k in (e.crop_key, e.snapshot_key)} - kept)
    assert [action for action, _ in proc.audit.events] == ["retention_delete"]


def test_a_camera_gone_quiet_ends_its_tracks_and_forgets_them():
    proc = processor()
    events = [embedding(i, ALICE) for i in range(3)]
    outputs = proc.process(events)
    proc._end_quiet_tracks(0.0)
    assert tracks(proc) == () and [spec for spec, _ in outputs] == [ALERTS]
    proc._delete_due(everything=True)
    assert sorted(proc.store.deleted) == sorted(k for e in events for k in (e.crop_key, e.snapshot_key))
    ended = proc.process([])  # the ends go out with the next batch
    assert [(spec, e.reason, e.faces, e.alerted_person_ids) for spec, e in ended] == [(TRACKS, "gap", 3, ["alice"])]
    assert proc.process([]) == []


def test_a_runs_tracks_end_with_the_run_not_with_wall_time():
    proc = processor()
    proc.process([embedding(i, ALICE, run_id="run-1") for i in range(3)])
    proc._end_quiet_tracks(0.0)  # however long the run's faces stall (a fault upstream), its tracks stay open
    assert len(tracks(proc, ("run-1", "cam-a"))) == 1 and not proc.has_pending()
    proc.deployments.runs_over.add("run-1")  # the run's deployment ended: no face of it will come
    proc._end_quiet_tracks(0.0)
    assert tracks(proc, ("run-1", "cam-a")) == () and proc.has_pending()
    ended = proc.process([])
    assert [(spec, e.run_id, e.faces, e.alerted_person_ids) for spec, e in ended] == [(TRACKS, "run-1", 3, ["alice"])]
    assert [(e.run_id, e.tracks) for _, e in proc.checkpoint()] == [("run-1", [])] and not proc.has_pending()
