"""k8s/milvus_roles.py against the local stack's Milvus: the writer enrols and removes, a reader searches and may not write."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import numpy as np
import pytest
from pydantic import SecretStr
from pymilvus import MilvusClient

from storage.vectors import DIM, Watchlist
from tests.k8s.manifests import generator
from tests.k8s.manifests import milvus_roles as roles_script

pytestmark = pytest.mark.services


def test_every_milvus_user_is_a_principal():
    assert set(roles_script().ACCESS) <= {p.name for p in generator().principals()}
    assert sorted(p for p, access in roles_script().ACCESS.items() if access == "writer") == ["vigil-console", "vigil-enrol"]


def granted(call, timeout_s: float = 20.0):
    """``call()`` once Milvus's proxies have the new grants: they cache privileges and refresh them asynchronously,
    so a call right after the grant may be refused for a moment (seen under load)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - only a refusal is retried
            if "permission" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def users(stack, *kinds: str):
    """A fresh collection and one user per access kind (k8s/milvus_roles.py); returns it and ``as_user(kind)``."""
    settings = stack.settings.milvus
    collection = f"roles_{uuid.uuid4().hex[:8]}"
    access = {f"vigil-{kind}-{collection}": kind for kind in kinds}
    tokens = roles_script().create(MilvusClient(uri=settings.uri, token=settings.token.get_secret_value()), collection, access)
    assert set(tokens) == set(access)

    def as_user(kind: str) -> Watchlist:
        token = SecretStr(tokens[f"vigil-{kind}-{collection}"])
        return Watchlist(settings.model_copy(update={"collection": collection, "token": token}))

    return collection, as_user


def test_the_reader_searches_and_cannot_write(stack):
    _, as_user = users(stack, "reader", "writer")
    vector = np.zeros((1, DIM), np.float32)
    vector[0, 0] = 1
    expires = datetime(2100, 1, 1, tzinfo=timezone.utc)
    other = np.zeros((1, DIM), np.float32)
    other[0, 1] = 1
    with as_user("writer") as writer:
        granted(writer.ensure_collection)  # enrolment creates the collection
        writer.add("p-1", vector, ["k-1"], "tester", "roles check", expires_at=expires)
        writer.add("p-gone", other, ["k-gone"], "tester", "roles check", expires_at=expires)
        assert writer.search(vector, limit=1)[0][0].person_id == "p-1"  # enrolment's near-duplicate check
        # Removal (accountability.watchlist): the person's entries, deleted, then the collection compacted.
        writer.delete(writer.entries(person_id="p-gone"))
        writer.compact()
        assert writer.entries(person_id="p-gone") == []
    with as_user("reader") as reader:
        granted(reader.ensure_collection)  # what match does at start-up: finds and loads it
        assert [hit.person_id for hit in reader.search(vector, limit=1)[0]] == ["p-1"]
        with pytest.raises(Exception, match="(?i)permission"):
            reader.add("p-2", vector, ["k-2"], "tester", "not allowed", expires_at=expires)
        with pytest.raises(Exception, match="(?i)permission"):
            reader.compact()


def test_the_housekeeper_purges_and_cannot_search_or_insert(stack):
    _, as_user = users(stack, "writer", "housekeeper")
    vector = np.zeros((1, DIM), np.float32)
    vector[0, 0] = 1
    with as_user("writer") as writer:
        granted(writer.ensure_collection)
        writer.add("p-old", vector, ["k-old"], "tester", "roles check", expires_at=datetime(2100, 1, 1, tzinfo=timezone.utc))
    with as_user("housekeeper") as housekeeper:
        granted(housekeeper.ensure_collection)  # what vigil housekeep does first: finds and loads it
        # accountability.watchlist.purge_expired: query (here: as if 2100 had come), delete, compact.
        expired = housekeeper.entries(expired_at=datetime(2100, 1, 2, tzinfo=timezone.utc))
        assert [e.person_id for e in expired] == ["p-old"]
        housekeeper.delete(expired)
        housekeeper.compact()
        assert housekeeper.entries() == []
        with pytest.raises(Exception, match="(?i)permission"):
            housekeeper.search(vector, limit=1)
        with pytest.raises(Exception, match="(?i)permission"):
            housekeeper.add("p-2", vector, ["k-2"], "tester", "not allowed", expires_at=datetime(2100, 1, 1, tzinfo=timezone.utc))
