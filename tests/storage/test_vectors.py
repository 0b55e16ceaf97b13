"""Watchlist against the real Milvus of the session stack, with random normalised vectors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
import uuid

import numpy as np
import pytest

from storage.vectors import DIM, Hit, Watchlist, WatchlistError

LATER = datetime.now(timezone.utc) + timedelta(days=1)  # watchlist entries expire; these outlive the test

pytestmark = pytest.mark.services


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(rng: np.random.Generator, center: np.ndarray, n: int, noise: float = 0.3) -> np.ndarray:
    """n samples around ``center``: what several photos of one face look like (cosine ~0.95)."""
    v = center[None, :] + noise * unit(rng, n) / np.sqrt(1 + noise**2)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_watchlist(stack, **update) -> Watchlist:
    settings = stack.settings.milvus.model_copy(update={"collection": f"test_{uuid.uuid4().hex[:10]}", **update})
    wl = Watchlist(settings)
    wl.ensure_collection()
    return wl


@pytest.fixture(scope="module")
def shared_watchlist(stack):
    wl = make_watchlist(stack)  # creating and loading a collection takes ~3 s: share one
    yield wl
    wl.drop()
    wl.close()


@pytest.fixture()
def watchlist(shared_watchlist):
    for person in shared_watchlist.persons():
        shared_watchlist.remove(person)
    assert shared_watchlist.count() == 0
    return shared_watchlist


@pytest.fixture()
def rng():
    return np.random.default_rng(1234)


def test_empty_collection(watchlist, rng):
    assert watchlist.search(unit(rng, 3), limit=5) == [[], [], []]
    assert watchlist.count() == 0
    assert watchlist.persons() == {}
    assert watchlist.remove("nobody") == 0


def test_enrol_then_search_sees_it_at_once(watchlist, rng):
    face = unit(rng, 1)
    ids = watchlist.add("alice", face, ["watchlist/alice/1.jpg"], enrolled_by="officer-1", reason="case 42", expires_at=LATER)
    assert len(ids) == 1
    [[hit]] = watchlist.search(face)  # Strong read straight after the write
    assert isinstance(hit, Hit)
    assert (hit.person_id, hit.entry_id, hit.photo_key) == ("alice", ids[0], "watchlist/alice/1.jpg")
    assert hit.score == pytest.approx(1.0, abs=1e-4)


def test_two_persons_are_separable(watchlist, rng):
    alice_c, bob_c = unit(rng, 2)
    alice_ids = watchlist.add("alice", near(rng, alice_c, 3), [f"a/{i}.jpg" for i in range(3)], "officer-1", "r", expires_at=LATER)
    bob_ids = watchlist.add("bob", near(rng, bob_c, 4), [f"b/{i}.jpg" for i in range(4)], "officer-2", "r", expires_at=LATER)
    assert len(set(alice_ids + bob_ids)) == 7
    assert watchlist.persons() == {"alice": 3, "bob": 4}
    assert watchlist.count() == 7

    probes = np.vstack([near(rng, alice_c, 5), near(rng, bob_c, 5), unit(rng, 5)])
    results = watchlist.search(probes, limit=3)
    assert len(results) == 15
    for row in results[:5]:
        assert row[0].person_id == "alice" and row[0].score > 0.8 and row[0].entry_id in alice_ids
    for row in results[5:10]:
        assert row[0].person_id == "bob" and row[0].score > 0.8 and row[0].entry_id in bob_ids
    for row in results[10:]:  # strangers: nothing close (random 512-d vectors have cosine ~0 +- 0.05)
        assert row[0].score < 0.3
    for row in results:
        assert len(row) == 3 and [h.score for h in row] == sorted((h.score for h in row), reverse=True)


def test_remove_person(watchlist, rng):
    alice_c, bob_c = unit(rng, 2)
    watchlist.add("alice", near(rng, alice_c, 3), ["a"] * 3, "officer-1", "r", expires_at=LATER)
    watchlist.add("bob", near(rng, bob_c, 2), ["b"] * 2, "officer-1", "r", expires_at=LATER)
    assert watchlist.remove("alice") == 3
    assert watchlist.persons() == {"bob": 2}
    assert watchlist.count() == 2
    [row] = watchlist.search(alice_c[None, :], limit=5)
    assert {h.person_id for h in row} == {"bob"}
    assert watchlist.remove("alice") == 0


def test_awkward_person_ids_are_quoted(watchlist, rng):
    odd = 'o"brien \\ "x" == "y" || true'
    watchlist.add(odd, unit(rng, 1), ["k"], "officer-1", "r", expires_at=LATER)
    watchlist.add("plain", unit(rng, 1), ["k"], "officer-1", "r", expires_at=LATER)
    assert watchlist.persons() == {odd: 1, "plain": 1}
    assert watchlist.remove(odd) == 1
    assert watchlist.persons() == {"plain": 1}


def test_bad_input_is_rejected_before_milvus(watchlist, rng):
    with pytest.raises(ValueError):
        watchlist.add("p", rng.normal(size=(2, 128)), ["a", "b"], "o", "r", expires_at=LATER)
    with pytest.raises(ValueError):
        watchlist.add("p", unit(rng, 2), ["only-one"], "o", "r", expires_at=LATER)
    with pytest.raises(ValueError):
        watchlist.add("", unit(rng, 1), ["a"], "o", "r", expires_at=LATER)
    with pytest.raises(ValueError):
        watchlist.add("p", np.zeros((1, DIM)), ["a"], "o", "r", expires_at=LATER)
    with pytest.raises(ValueError):
        watchlist.search(unit(rng, 1), limit=0)
    assert watchlist.count() == 0


def test_hnsw_index_uses_settings(watchlist):
    info = watchlist.client.describe_index(watchlist.collection, "embedding")
    assert info["index_type"] == "HNSW" and info["metric_type"] == "COSINE"
    assert int(info["M"]) == watchlist.settings.hnsw_m
    assert int(info["efConstruction"]) == watchlist.settings.hnsw_ef_construction


def test_flat_index(stack, rng):
    watchlist = make_watchlist(stack, index="FLAT")
    try:
        assert watchlist.client.describe_index(watchlist.collection, "embedding")["index_type"] == "FLAT"
        assert watchlist.search(unit(rng, 1)) == [[]]
        faces = unit(rng, 4)
        ids = watchlist.add("carol", faces, list("abcd"), "officer-1", "r", expires_at=LATER)
        results = watchlist.search(faces, limit=1)
        assert [row[0].entry_id for row in results] == ids
    finally:
        watchlist.drop()
        watchlist.close()


def test_ensure_collection_is_idempotent_and_checks_dim(watchlist, stack):
    watchlist.ensure_collection()
    other = Watchlist(watchlist.settings)
    other.ensure_collection()
    other.close()
    name = f"test_dim_{uuid.uuid4().hex[:8]}"
    watchlist.client.create_collection(name, dimension=128)
    try:
        wrong = Watchlist(watchlist.settings.model_copy(update={"collection": name}), client=watchlist.client)
        with pytest.raises(WatchlistError):
            wrong.ensure_collection()
    finally:
        watchlist.client.drop_collection(name)


def test_search_leaves_out_expired_entries_and_other_persons(watchlist, rng):
    alice = unit(rng, 1)
    soon = datetime.now(timezone.utc) + timedelta(seconds=60)
    watchlist.add("alice", alice, ["a/1.jpg"], "officer-1", "r", expires_at=soon, sources=["custody photo 7"])
    watchlist.add("bob", near(rng, alice[0], 1, noise=0.2), ["b/1.jpg"], "officer-1", "r", expires_at=LATER)
    assert [h.person_id for h in watchlist.search(alice, limit=2)[0]] == ["alice", "bob"]
    later = soon + timedelta(seconds=1)
    assert [h.person_id for h in watchlist.search(alice, limit=2, now=later)[0]] == ["bob"]
    assert [h.person_id for h in watchlist.search(alice, limit=2, persons=["alice"])[0]] == ["alice"]
    assert watchlist.search(alice, limit=2, persons=[]) == [[]]
    (expired,) = watchlist.entries(expired_at=later)
    assert (expired.person_id, expired.source, expired.photo_key) == ("alice", "custody photo 7", "a/1.jpg")
    with pytest.raises(ValueError, match="future"):
        watchlist.add("carol", unit(rng, 1), ["c"], "o", "r", expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))


def test_a_collection_from_before_expiry_is_refused_with_what_to_do(watchlist):
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIM)
    for name in ("person_id", "photo_key", "enrolled_by", "reason"):
        schema.add_field(name, DataType.VARCHAR, max_length=128)
    schema.add_field("enrolled_at", DataType.INT64)
    name = f"test_old_{uuid.uuid4().hex[:8]}"
    watchlist.client.create_collection(name, schema=schema)
    try:
        old = Watchlist(watchlist.settings.model_copy(update={"collection": name}), client=watchlist.client)
        with pytest.raises(WatchlistError, match=r"made before watchlist entries expired .* Enrol again into a new collection"):
            old.ensure_collection()
    finally:
        watchlist.client.drop_collection(name)
