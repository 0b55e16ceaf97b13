"""FaceEmbedder on real faces: shape, norm, determinism, identity separation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from embed.model import DEFAULT_STANDARDIZATION, EMBEDDING_DIM
from embed.weights import MODEL_ID

from tests.conftest import load_rgb

pytestmark = pytest.mark.models

# a handful of identities.csv photos: 4 people x 3 photos
PEOPLE = ("person-01", "person-02", "person-03", "person-04")
PHOTOS_PER_PERSON = 3


@pytest.fixture(scope="module")
def labelled_crops(detector, face_pairs, identities):
    """(identity, file, crop) of the largest face in each chosen photo."""
    out = []
    for person in PEOPLE:
        for name in identities[person][:PHOTOS_PER_PERSON]:
            faces = detector.detect([load_rgb(face_pairs / name, max_side=1024)])[0]
            assert faces, f"no face found in {name}"
            out.append((person, name, faces[0].crop))
    return out


def test_shape_dtype_norm(embedder, labelled_crops):
    crops = [c for _, _, c in labelled_crops[:5]]
    emb = embedder.embed(crops)
    assert emb.shape == (5, EMBEDDING_DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(emb).all()


def test_deterministic_and_batch_independent(embedder, labelled_crops):
    crops = [c for _, _, c in labelled_crops[:4]]
    first = embedder.embed(crops)
    np.testing.assert_array_equal(first, embedder.embed(crops))
    one_by_one = np.concatenate([embedder.embed([c]) for c in crops])
    np.testing.assert_allclose(first, one_by_one, atol=1e-5)


def test_batches_larger_than_batch_size(weights_dir, device, labelled_crops):
    from embed.model import FaceEmbedder

    small = FaceEmbedder(weights_dir, device, batch_size=2)
    crops = [c for _, _, c in labelled_crops[:5]]
    np.testing.assert_allclose(small.embed(crops), np.concatenate([small.embed([c]) for c in crops]), atol=1e-5)


def test_empty_and_bad_input(embedder):
    assert embedder.embed([]).shape == (0, EMBEDDING_DIM)
    with pytest.raises(ValueError):
        embedder.embed([np.zeros((160, 160), np.uint8)])
    with pytest.raises(ValueError):
        embedder.embed([np.zeros((160, 160, 3), np.float32)])


def test_other_crop_sizes_are_resized(embedder, labelled_crops):
    from PIL import Image

    crop = labelled_crops[0][2]
    bigger = np.array(Image.fromarray(crop).resize((240, 240), Image.BILINEAR))
    a, b = embedder.embed([crop, bigger])
    assert float(a @ b) > 0.95


def test_model_id(embedder):
    assert embedder.model_id == MODEL_ID
    assert MODEL_ID.startswith("facenet-casia-20180408@") and len(MODEL_ID.split("@")[1]) == 8
    assert DEFAULT_STANDARDIZATION == "fixed"


def test_same_person_scores_higher_than_different_people(embedder, labelled_crops):
    who = [person for person, _, _ in labelled_crops]
    emb = embedder.embed([crop for _, _, crop in labelled_crops])
    sims = emb @ emb.T
    same = [sims[i, j] for i, j in itertools.combinations(range(len(who)), 2) if who[i] == who[j]]
    diff = [sims[i, j] for i, j in itertools.combinations(range(len(who)), 2) if who[i] != who[j]]
    assert len(same) == len(PEOPLE) * 3 and len(diff) == 54
    assert np.mean(same) > np.mean(diff) + 0.4, (np.mean(same), np.mean(diff))
    # on these photos the two groups do not overlap at all, around the match threshold (0.5)
    assert min(same) > max(diff), (min(same), max(diff))
    assert min(same) > 0.4 and max(diff) < 0.5
    # every photo's nearest other photo shows the same person
    np.fill_diagonal(sims, -2)
    assert [who[j] for j in sims.argmax(axis=1)] == who


def test_watchlist_sample_matches_obama_not_biden(embedder, detector, samples_dir):
    def face(path):
        faces = detector.detect([load_rgb(path, max_side=1024)])[0]
        assert faces
        return faces[0].crop

    enrolled = embedder.embed([face(samples_dir / "watchlist" / "obama" / n) for n in ("obama.jpg", "obama2.jpg")])
    probes = embedder.embed([face(samples_dir / "scenes" / n) for n in ("obama3.jpg", "biden.jpg")])
    obama3, biden = (enrolled @ probes.T).max(axis=0)
    assert obama3 > 0.5 > biden, (obama3, biden)
    assert obama3 - biden > 0.3
