from types import SimpleNamespace

import pytest

from match.decision import (
    MIN_WEIGHT, Evidence, add_face, aggregate, alert_id, best_per_person, due_alerts, face_weight, track_id,
)


def test_ids_are_deterministic_and_distinct():
    assert alert_id("track-1", "alice") == alert_id("track-1", "alice")
    assert alert_id("track-1", "alice") != alert_id("track-1", "bob")
    assert alert_id("track-1", "alice") != alert_id("track-2", "alice")
    assert track_id(None, "cam-a", "f1") == track_id(None, "cam-a", "f1")
    assert len({track_id(None, "cam-a", "f1"), track_id("run", "cam-a", "f1"), track_id(None, "cam-b", "f1"),
                track_id(None, "cam-a", "f2")}) == 4


def test_face_weight_grows_with_size_probability_and_quality():
    assert face_weight(100, 1.0, None) == face_weight(300, 1.0, 1.0) == 1.0
    assert face_weight(50, 1.0, None) == pytest.approx(0.5)
    assert face_weight(100, 0.9, 0.5) == pytest.approx(0.45)
    assert face_weight(0, 1.0, 1.0) == face_weight(100, 1.0, 0.0) == MIN_WEIGHT


def test_best_score_per_person():
    hits = [SimpleNamespace(person_id=p, score=s) for p, s in [("a", 0.7), ("b", 0.6), ("a", 0.8), ("b", 0.1)]]
    assert best_per_person(hits) == {"a": 0.8, "b": 0.6}
    assert best_per_person([]) == {}


def test_evidence_keeps_the_best_face_and_counts_supporting_faces():
    ev = Evidence().add(0.6, 1.0, 0.5, "f1").add(0.4, 1.0, 0.5, "f2").add(0.6, 2.0, 0.5, "f3")
    assert ev.supporting == 2 and ev.best_score == 0.6 and ev.best_face == "f1"  # a tie keeps the earlier face
    assert ev.weighted_score == pytest.approx(0.6 + 0.4 + 1.2)
    assert aggregate(ev, 4.0) == pytest.approx(0.55)
    assert aggregate(Evidence(), 0.0) == 0.0


def test_persons_missing_from_a_face_count_zero_in_the_aggregate():
    persons = add_face({}, {"a": 0.8, "b": 0.55}, 1.0, 0.5, "f1")
    persons = add_face(persons, {"a": 0.7}, 1.0, 0.5, "f2")  # b not among f2's hits
    assert aggregate(persons["a"], 2.0) == pytest.approx(0.75)
    assert aggregate(persons["b"], 2.0) == pytest.approx(0.275)
    assert due_alerts(persons, 2.0, (), 0.5, 2) == [("a", pytest.approx(0.75))]


def test_add_face_does_not_change_its_input():
    persons = add_face({}, {"a": 0.8}, 1.0, 0.5, "f1")
    again = add_face(persons, {"a": 0.8}, 1.0, 0.5, "f2")
    assert persons["a"].supporting == 1 and again["a"].supporting == 2


def test_due_alerts_need_the_aggregate_and_enough_supporting_faces_once():
    one = add_face({}, {"a": 0.9}, 1.0, 0.5, "f1")
    assert due_alerts(one, 1.0, (), 0.5, 2) == []  # one lucky face is not enough
    assert due_alerts(one, 1.0, (), 0.5, 1) == [("a", 0.9)]
    # A lookalike: two faces above the threshold, but the track's mean stays below it.
    look = one
    for i, s in enumerate([0.55, 0.3, 0.35, 0.3, 0.2]):
        look = add_face(look, {"a": s}, 1.0, 0.5, f"f{i + 2}")
    assert look["a"].supporting == 2 and aggregate(look["a"], 6.0) < 0.5
    assert due_alerts(look, 6.0, (), 0.5, 2) == []
    two = add_face(one, {"a": 0.7, "b": 0.6}, 1.0, 0.5, "f2")
    two = add_face(two, {"b": 0.6}, 1.0, 0.5, "f3")
    assert due_alerts(two, 3.0, (), 0.5, 2) == [("a", pytest.approx(1.6 / 3)), ]  # b: 1.2 / 3 < 0.5
    assert due_alerts(two, 3.0, ("a",), 0.5, 2) == []  # already alerted


def test_weights_let_good_faces_decide():
    # Two poor faces score low, one good face scores high: the weighted mean follows the good one.
    persons = add_face({}, {"a": 0.3}, 0.1, 0.5, "blurred")
    persons = add_face(persons, {"a": 0.3}, 0.1, 0.5, "turned")
    persons = add_face(persons, {"a": 0.8}, 1.0, 0.5, "good")
    persons = add_face(persons, {"a": 0.7}, 1.0, 0.5, "good2")
    assert aggregate(persons["a"], 2.2) > 0.7
    assert due_alerts(persons, 2.2, (), 0.5, 2) == [("a", pytest.approx(aggregate(persons["a"], 2.2)))]
