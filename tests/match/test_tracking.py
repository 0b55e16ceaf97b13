from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from match.decision import track_id
from match.tracking import Face, affinity, iou, step
from runtime.settings import MatchSettings

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
PARAMS = MatchSettings(track_gap_s=2.0, track_similarity=0.5, track_iou_bonus=0.2, max_tracks_per_camera=4, threshold=0.5, min_track_faces=2)
RNG = np.random.default_rng(7)


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


ALICE, BOB, CAROL = (unit(RNG.normal(size=512)) for _ in range(3))  # random 512-d vectors: cosine about 0


def near(base, similarity):
    """A unit vector at cosine ``similarity`` from ``base``."""
    other = unit(RNG.normal(size=512))
    other = unit(other - np.dot(other, base) * base)
    return similarity * base + np.sqrt(1 - similarity ** 2) * other


def face(i, emb, *, t=None, box=(100, 100, 180, 190), scores=None, frame=None, weight=1.0):
    return Face(face_event_id=f"fr{frame or i}-f{i}", frame_event_id=f"fr{frame or i}",
                source_ts=T0 + timedelta(seconds=i / 6 if t is None else t),
                box=box, embedding=emb, weight=weight, scores=scores or {}, ref=f"ref{i}")


def run(faces, params=PARAMS, tracks=()):
    steps = []
    for f in faces:
        s = step(tracks, f, params, run_id=None, camera_id="cam-a")
        tracks = s.tracks
        steps.append(s)
    return steps


def moving_box(i, dx=30):
    return (100 + dx * i, 100, 180 + dx * i, 190)


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_a_person_crossing_the_scene_is_one_track_with_one_alert():
    faces = [face(i, near(ALICE, 0.9), box=moving_box(i), scores={"alice": 0.7, "bob": 0.2}) for i in range(12)]
    steps = run(faces)
    ids = {s.track.track_id for s in steps}
    assert ids == {track_id(None, "cam-a", faces[0].face_event_id)}  # derived from the first face
    alerts = [(i, a) for i, s in enumerate(steps) for a in s.alerts]
    assert alerts == [(1, ("alice", pytest.approx(0.7)))]  # at the second face (min_faces=2), once
    last = steps[-1].track
    assert last.faces == 12 and last.alerted == ("alice",) and last.persons["alice"].best_face == "ref0"
    assert not any(s.ended for s in steps)


def test_a_lookalike_with_a_few_lucky_faces_does_not_alert():
    scores = [0.55, 0.3, 0.35, 0.52, 0.3, 0.25, 0.3, 0.4]  # two faces reach 0.5, the mean does not
    steps = run([face(i, near(CAROL, 0.9), scores={"alice": s}) for i, s in enumerate(scores)])
    assert len({s.track.track_id for s in steps}) == 1
    assert steps[-1].track.persons["alice"].supporting == 2
    assert not any(s.alerts for s in steps)


def test_one_lucky_face_is_not_enough():
    steps = run([face(0, CAROL, scores={"alice": 0.9})] + [face(i, near(CAROL, 0.9), scores={"alice": 0.1}) for i in (1, 2)])
    assert not any(s.alerts for s in steps)


def test_two_people_in_one_frame_get_two_tracks():
    faces = []
    for i in range(4):
        faces.append(face(2 * i, near(ALICE, 0.9), t=i / 6, frame=f"x{i}", box=(100, 100, 180, 190), scores={"alice": 0.8}))
        faces.append(face(2 * i + 1, near(BOB, 0.9), t=i / 6, frame=f"x{i}", box=(110, 100, 190, 190), scores={"alice": 0.3}))
    steps = run(faces)
    alice = {s.track.track_id for s in steps[0::2]}
    bob = {s.track.track_id for s in steps[1::2]}
    assert len(alice) == len(bob) == 1 and alice != bob  # overlapping boxes, yet the faces stay apart
    assert [a for s in steps for a in s.alerts] == [("alice", pytest.approx(0.8))]
    assert len(steps[-1].tracks) == 2


def test_a_face_takes_at_most_one_place_per_frame():
    # Two faces of one frame that both resemble the track: the second starts its own track.
    steps = run([face(0, ALICE), face(1, ALICE, frame="0", t=0), face(2, ALICE, t=0.2)])
    assert steps[0].track.track_id != steps[1].track.track_id
    assert steps[2].track.track_id == steps[0].track.track_id  # the older track wins a tie


def test_overlap_lowers_the_similarity_needed():
    box = (100, 100, 180, 190)
    base = run([face(0, ALICE, box=box)])[0].tracks
    there = face(1, near(ALICE, 0.4), box=box)  # 0.4 + 0.2 * IoU 1.0 >= 0.5
    far = face(1, near(ALICE, 0.4), box=(400, 100, 480, 190))  # 0.4 + 0 < 0.5
    assert affinity(base[0], there, PARAMS) == pytest.approx(0.6)
    assert step(base, there, PARAMS, run_id=None, camera_id="cam-a").track is not base[0]
    assert len(step(base, there, PARAMS, run_id=None, camera_id="cam-a").tracks) == 1
    assert len(step(base, far, PARAMS, run_id=None, camera_id="cam-a").tracks) == 2
    # A strong likeness joins anywhere in the frame (a fast or low-frame-rate crossing).
    assert len(step(base, face(1, near(ALICE, 0.7), box=(400, 100, 480, 190)), PARAMS, run_id=None, camera_id="cam-a").tracks) == 1


def test_a_track_ends_when_a_later_face_arrives_past_the_gap():
    steps = run([face(0, ALICE, t=0.0, scores={"alice": 0.9}), face(1, ALICE, t=1.0, scores={"alice": 0.9}),
                 face(2, ALICE, t=3.0), face(3, BOB, t=5.5)])
    assert not steps[1].ended and steps[1].alerts
    first = steps[1].track
    assert not steps[2].ended and steps[2].track.track_id == first.track_id  # 2.0 s apart: not past the gap
    ended = steps[3].ended
    assert [(e.track.track_id, e.reason) for e in ended] == [(first.track_id, "gap")]
    assert ended[0].track.faces == 3 and ended[0].track.alerted == ("alice",)
    assert ended[0].track.started_at == T0 and ended[0].track.last_seen == T0 + timedelta(seconds=3)
    assert steps[3].tracks == (steps[3].track,) and steps[3].track.track_id != first.track_id


def test_the_same_person_after_the_gap_is_a_new_track_and_may_alert_again():
    steps = run([face(i, ALICE, t=i * 0.2, scores={"alice": 0.9}) for i in range(3)]
                + [face(10 + i, ALICE, t=10 + i * 0.2, scores={"alice": 0.9}) for i in range(3)])
    assert [a[0] for s in steps for a in s.alerts] == ["alice", "alice"]
    assert len({s.track.track_id for s in steps}) == 2


def test_least_recently_seen_tracks_are_evicted_beyond_the_limit():
    people = [unit(RNG.normal(size=512)) for _ in range(6)]
    steps = run([face(i, people[i], t=i * 0.1) for i in range(6)])
    assert len(steps[3].tracks) == 4 and not steps[3].ended
    assert [(e.track.first_face_event_id, e.reason) for e in steps[4].ended] == [("fr0-f0", "evicted")]
    assert [e.track.first_face_event_id for e in steps[5].ended] == ["fr1-f1"]
    assert len(steps[5].tracks) == 4


def test_step_changes_nothing_it_was_given_so_a_retry_gives_the_same_result():
    faces = [face(i, near(ALICE, 0.9), scores={"alice": 0.8}) for i in range(3)]
    tracks = run(faces[:1])[0].tracks
    before = (tracks[0].faces, tracks[0].weight, tracks[0].embedding_sum.copy(), dict(tracks[0].persons), tracks[0].alerted)
    first = step(tracks, faces[1], PARAMS, run_id=None, camera_id="cam-a")
    again = step(tracks, faces[1], PARAMS, run_id=None, camera_id="cam-a")
    after = (tracks[0].faces, tracks[0].weight, tracks[0].embedding_sum, dict(tracks[0].persons), tracks[0].alerted)
    assert before[0:2] == after[0:2] and np.array_equal(before[2], after[2]) and before[3] == after[3] and before[4] == after[4]
    assert first.alerts == again.alerts == (("alice", pytest.approx(0.8)),)
    assert first.track.track_id == again.track.track_id


def test_tracks_are_per_run_and_camera():
    a = step((), face(0, ALICE), PARAMS, run_id=None, camera_id="cam-a").track
    b = step((), face(0, ALICE), PARAMS, run_id=None, camera_id="cam-b").track
    c = step((), face(0, ALICE), PARAMS, run_id="replay", camera_id="cam-a").track
    assert len({a.track_id, b.track_id, c.track_id}) == 3


def test_the_settings_drive_the_tracker():
    # A gap of 5 s keeps the track open where the 2 s of PARAMS ended it; 3 faces must reach 0.6 before an alert.
    faces = [face(0, ALICE, t=0.0, scores={"alice": 0.9}), face(1, ALICE, t=3.0, scores={"alice": 0.9}),
             face(2, ALICE, t=3.2, scores={"alice": 0.9})]
    steps = run(faces, MatchSettings(threshold=0.6, min_track_faces=3, track_gap_s=5))
    assert len({s.track.track_id for s in steps}) == 1 and not any(s.ended for s in steps)
    assert [bool(s.alerts) for s in steps] == [False, False, True]
    assert run(faces)[1].ended  # PARAMS: past the 2 s gap
