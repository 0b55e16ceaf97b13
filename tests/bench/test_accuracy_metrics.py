"""The verification metrics of bench.accuracy on small hand-computed inputs (pure logic, no models)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench.accuracy import (
    Pair,
    accuracy_at,
    auc,
    best_accuracy,
    eer,
    evaluate,
    pair_scores,
    roc_auc,
    roc_curve,
    tar_at_far,
    threshold_at_far,
)

# Two same-person pairs (0.9, 0.7) and two different-person pairs (0.8, 0.6), interleaved.
MIXED = ([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])


def test_roc_curve_points():
    fpr, tpr, thr = roc_curve(*MIXED)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.8, 0.7, 0.6])


def test_roc_curve_input_order_does_not_matter():
    scores, labels = MIXED
    a = roc_curve(scores, labels)
    b = roc_curve(scores[::-1], labels[::-1])
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y)


def test_auc_hand_computed():
    # pos > neg for (0.9, 0.8), (0.9, 0.6), (0.7, 0.6): 3 of 4
    assert roc_auc(*MIXED) == pytest.approx(0.75)
    assert roc_auc([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == pytest.approx(0.0)
    assert auc([0, 0, 1], [0, 1, 1]) == pytest.approx(1.0)
    assert auc([0, 1], [0, 1]) == pytest.approx(0.5)


def test_tied_scores_count_half():
    fpr, tpr, thr = roc_curve([0.5, 0.5], [1, 0])
    np.testing.assert_allclose(fpr, [0, 1])
    np.testing.assert_allclose(tpr, [0, 1])
    assert roc_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    # one tie among 2 x 2 pairs: (1 + 1 + 0.5 + 0) / 4
    assert roc_auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert roc_auc([0.9, 0.5, 0.5, 0.6], [1, 1, 0, 0]) == pytest.approx(0.625)


def test_auc_equals_mann_whitney_on_random_scores_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 8, 60).astype(float)
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    assert roc_auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))


def test_eer_hand_computed():
    # along the ROC, FRR - FAR = 1, 0.5, 0 -> the EER point is (0.5, 0.5) at threshold 0.8
    assert eer(*roc_curve(*MIXED)) == (pytest.approx(0.5), pytest.approx(0.8))
    # perfect separation: EER 0 at the lowest same-person score
    assert eer(*roc_curve([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0])) == (pytest.approx(0.0), pytest.approx(0.8))
    # a single tie: FRR - FAR goes 1 -> -1 in one step, crossing halfway
    assert eer(*roc_curve([0.5, 0.5], [1, 0]))[0] == pytest.approx(0.5)
    # fully inverted scores
    assert eer(*roc_curve([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]))[0] == pytest.approx(1.0)


def test_eer_interpolates_between_roc_points():
    # 1 positive, 4 negatives: ROC (0,0) (0.25,0) (0.5,0) (0.5,1) (0.75,1) (1,1)
    # FRR - FAR: 1, 0.75, 0.5, -0.5 -> crossing halfway between (0.5, 0) and (0.5, 1): EER = 0.5
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    labels = [0, 0, 1, 0, 0]
    assert eer(*roc_curve(scores, labels)) == (pytest.approx(0.5), pytest.approx(0.7))
    # the one negative outscores all 3 positives: the first step, to (FAR 1, FRR 1), already reaches FRR = FAR
    assert eer(*roc_curve([0.9, 0.8, 0.7, 0.6], [0, 1, 1, 1]))[0] == pytest.approx(1.0)


def test_tar_at_far():
    roc = roc_curve(*MIXED)
    assert tar_at_far(*roc, 0.0) == (pytest.approx(0.5), pytest.approx(0.9))
    assert tar_at_far(*roc, 0.49) == (pytest.approx(0.5), pytest.approx(0.9))
    assert tar_at_far(*roc, 0.5) == (pytest.approx(1.0), pytest.approx(0.7))
    assert tar_at_far(*roc, 1.0) == (pytest.approx(1.0), pytest.approx(0.7))  # the strictest threshold with that TAR
    # the top score is a different-person pair: no threshold reaches FAR 0 except rejecting everything
    assert tar_at_far(*roc_curve([0.9, 0.8], [0, 1]), 0.0) == (0.0, np.inf)


def test_tar_at_far_resolution_is_one_false_accept():
    # 100 negatives 0.00 .. 0.99: FAR 1 % allows exactly one false accept (the top negative, 0.99)
    neg = np.linspace(0.0, 0.99, 100)
    pos = np.array([0.995, 0.975, 0.5])
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(3), np.zeros(100)]
    roc = roc_curve(scores, labels)
    assert tar_at_far(*roc, 0.001)[0] == pytest.approx(1 / 3)  # only 0.995 is above every negative
    assert tar_at_far(*roc, 0.01)[0] == pytest.approx(1 / 3)   # 0.975 sits below two negatives (0.99, 0.98)
    assert tar_at_far(*roc, 0.02)[0] == pytest.approx(2 / 3)


def test_accuracy_at_and_best_accuracy():
    assert accuracy_at(*MIXED, 0.75) == pytest.approx(0.5)  # accepts 0.9 (right) and 0.8 (wrong), rejects 0.7 (wrong)
    assert accuracy_at(*MIXED, 0.7) == pytest.approx(0.75)  # the threshold itself is accepted
    assert accuracy_at(*MIXED, 0.95) == pytest.approx(0.5)
    assert best_accuracy(*MIXED) == (pytest.approx(0.75), pytest.approx(0.9))
    assert best_accuracy([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0]) == (pytest.approx(1.0), pytest.approx(0.8))


def test_failed_detections_always_count_as_errors():
    # +inf: a different-person pair with a failed photo (always accepted);
    # -inf: a same-person pair with a failed photo (always rejected)
    scores, labels = [np.inf, 0.9, 0.1, -np.inf], [0, 1, 0, 1]
    assert roc_auc(scores, labels) == pytest.approx(0.25)  # only (0.9 > 0.1) of the 4 pos/neg pairs is won
    for threshold in (-1.0, 0.0, 0.5, 1.0):
        assert accuracy_at(scores, labels, threshold) <= 0.5
    assert tar_at_far(*roc_curve(scores, labels), 0.1)[0] == 0.0


def test_pair_scores_marks_failed_photos():
    emb = {"a": np.array([1.0, 0.0]), "b": np.array([0.6, 0.8]), "c": None}
    pairs = [Pair("a", "b", True), Pair("a", "c", True), Pair("b", "c", False), Pair("a", "x", False)]
    scores, labels, failed = pair_scores(emb, pairs)
    assert failed == 3
    np.testing.assert_allclose(scores, [0.6, -np.inf, np.inf, np.inf])
    np.testing.assert_array_equal(labels, [True, True, False, False])


def test_threshold_at_far():
    imp = np.arange(1, 11) / 10.0  # 0.1 .. 1.0
    t = threshold_at_far(imp, 0.1)  # one false accept allowed: 1.0 only
    assert 0.9 < t <= 1.0 and np.mean(imp >= t) == pytest.approx(0.1)
    t = threshold_at_far(imp, 0.05)  # none allowed: just above the maximum
    assert t > 1.0 and t == pytest.approx(1.0) and np.mean(imp >= t) == 0.0
    t = threshold_at_far(imp, 0.3)  # floating point: 0.3 * 10 is 3.0000000000000004
    assert 0.7 < t <= 0.8 and np.mean(imp >= t) == pytest.approx(0.3)
    assert threshold_at_far(imp, 1.0) == -np.inf
    with pytest.raises(ValueError):
        threshold_at_far([], 0.01)


def test_evaluate_row():
    row = evaluate("x", *MIXED, 0.75, failed_photos=1, failed_pairs=2)
    assert (row.n_same, row.n_diff) == (2, 2)
    assert row.auc == pytest.approx(0.75) and row.eer == pytest.approx(0.5)
    assert row.tar_far1 == pytest.approx(0.5) and row.tar_far01 == pytest.approx(0.5)
    assert row.acc_default == pytest.approx(0.5)
    assert row.extra["same_min"] == pytest.approx(0.7) and row.extra["diff_max"] == pytest.approx(0.8)
    assert (row.failed_photos, row.failed_pairs) == (1, 2)


@pytest.mark.parametrize("scores, labels", [
    ([0.1, 0.2], [1, 1]),         # no different-person pair
    ([0.1, 0.2], [0, 0]),         # no same-person pair
    ([0.1, np.nan], [1, 0]),      # NaN score
    ([0.1, 0.2, 0.3], [1, 0]),    # length mismatch
])
def test_bad_input(scores, labels):
    with pytest.raises(ValueError):
        roc_curve(scores, labels)


def test_umeyama_recovers_a_similarity_and_align_face_lands_on_the_template():
    from detect.align import align_face, arcface_template, umeyama

    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    m = umeyama(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)
    # a mirrored point set is fitted by a rotation, never a reflection
    assert np.linalg.det(umeyama(src, src * [-1, 1])[:, :2]) > 0

    # an image whose 5 "landmarks" are bright dots: after alignment they sit on the template
    tpl = arcface_template(160)
    inv_rot = np.array([[np.cos(-0.2), -np.sin(-0.2)], [np.sin(-0.2), np.cos(-0.2)]])
    pts = (tpl - 80) @ (2.5 * inv_rot).T + [300, 260]  # the face 2.5x larger than the crop, tilted
    image = np.zeros((600, 600, 3), np.uint8)
    for x, y in pts:
        image[int(round(y)) - 3:int(round(y)) + 4, int(round(x)) - 3:int(round(x)) + 4] = 255
    crop = align_face(image, pts, tpl, 160)
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
    for x, y in tpl:
        assert crop[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2].mean() > 100
