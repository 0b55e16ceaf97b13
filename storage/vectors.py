"""The watchlist: enrolled face embeddings in Milvus, through pymilvus's ``MilvusClient``.

One entity per enrolled photo: an auto id, the person, the 512-d embedding
(stored L2-normalised; the index metric is COSINE, so a score is a cosine
similarity, higher is closer), the photo's S3 key, who enrolled it, why, and
when. Only what both the Milvus 2.3.5 server and Milvus Lite support is used:
FLAT/HNSW with COSINE, ``==``/``in``/range filters, delete by primary key.

Reads that must see the latest enrolments and removals use Strong consistency
(Milvus's default, Bounded, answers from a view up to seconds old); the match
stage may pass ``consistency_level="Bounded"`` to ``search`` for throughput.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pymilvus import DataType, MilvusClient

from runtime.settings import MilvusSettings

DIM = 512
MAX_LEN = {"person_id": 128, "photo_key": 1024, "enrolled_by": 128, "reason": 1024}
MAX_WINDOW = 16384  # Milvus's largest query/search result window (offset + limit)
STRONG = "Strong"


class WatchlistError(RuntimeError):
    """A watchlist operation failed in Milvus."""


class WatchlistUnavailable(WatchlistError, ConnectionError):
    """Milvus did not serve the request. A ConnectionError, so the stage runtime retries instead of dropping the event."""


@dataclass(frozen=True)
class Hit:
    """One search result: the entry ``entry_id`` of ``person_id``, cosine similarity ``score``."""

    person_id: str
    score: float
    entry_id: int
    photo_key: str | None = None


def _quote(value: str) -> str:
    """A Milvus expression string literal (filter templates fail to parse on 2.3.5)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Watchlist:
    """The watchlist collection named by ``MilvusSettings``."""

    def __init__(self, settings: MilvusSettings, client: MilvusClient | None = None, *, timeout_s: float = 30.0):
        self.settings = settings
        self.collection = settings.collection
        self.timeout_s = timeout_s
        self._own_client = client is None
        token = settings.token.get_secret_value() if settings.token else ""
        try:
            self.client = client or MilvusClient(uri=settings.uri, token=token, timeout=timeout_s)
        except Exception as exc:
            raise WatchlistError(f"cannot connect to Milvus at {settings.uri}: {exc}") from exc

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def __enter__(self) -> Watchlist:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ schema

    def _schema(self):
        schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False,
                                            description="Vigil watchlist: one entity per enrolled photo")
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("person_id", DataType.VARCHAR, max_length=MAX_LEN["person_id"])
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIM)
        schema.add_field("photo_key", DataType.VARCHAR, max_length=MAX_LEN["photo_key"])
        schema.add_field("enrolled_by", DataType.VARCHAR, max_length=MAX_LEN["enrolled_by"])
        schema.add_field("reason", DataType.VARCHAR, max_length=MAX_LEN["reason"])
        schema.add_field("enrolled_at", DataType.INT64, description="epoch milliseconds")
        return schema

    def _index_params(self):
        params = MilvusClient.prepare_index_params()
        if self.settings.index == "HNSW":
            params.add_index("embedding", index_type="HNSW", index_name="embedding", metric_type="COSINE",
                             params={"M": self.settings.hnsw_m, "efConstruction": self.settings.hnsw_ef_construction})
        else:
            params.add_index("embedding", index_type="FLAT", index_name="embedding", metric_type="COSINE")
        return params

    def ensure_collection(self) -> None:
        """Create the collection and its index when missing, check its shape, and load it."""
        name = self.collection
        try:
            if not self.client.has_collection(name):
                try:
                    self.client.create_collection(name, schema=self._schema(), index_params=self._index_params(),
                                                  consistency_level=STRONG, timeout=self.timeout_s)
                except Exception:
                    if not self.client.has_collection(name):  # not a lost race with another process
                        raise
            self._check_schema()
            if not self.client.list_indexes(name, field_name="embedding"):
                self.client.create_index(name, self._index_params(), timeout=self.timeout_s)
            self.client.load_collection(name, timeout=self.timeout_s)
        except WatchlistError:
            raise
        except Exception as exc:
            raise WatchlistError(f"cannot prepare collection {name!r}: {exc}") from exc

    def _check_schema(self) -> None:
        fields = {f["name"]: f for f in self.client.describe_collection(self.collection)["fields"]}
        missing = {"id", "embedding", *MAX_LEN, "enrolled_at"} - set(fields)
        if missing:
            raise WatchlistError(f"collection {self.collection!r} lacks fields {sorted(missing)}")
        dim = int(fields["embedding"].get("params", {}).get("dim", 0))
        if dim != DIM:
            raise WatchlistError(f"collection {self.collection!r} holds {dim}-d vectors, expected {DIM}")

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        self._call("drop", self.client.drop_collection, self.collection)

    # ------------------------------------------------------------------ writes

    def add(self, person_id: str, vectors: np.ndarray, photo_keys: Sequence[str], enrolled_by: str,
            reason: str) -> list[int]:
        """Enrol ``person_id`` with one entity per row of ``vectors`` (n, 512); return the new entry ids."""
        matrix = _as_matrix(vectors)
        if isinstance(photo_keys, str) or len(photo_keys) != len(matrix):
            raise ValueError(f"need one photo key per vector ({len(matrix)}), got {photo_keys!r}")
        _check_text("person_id", person_id, required=True)
        _check_text("enrolled_by", enrolled_by, required=True)
        _check_text("reason", reason)
        for key in photo_keys:
            _check_text("photo_key", key)
        now_ms = int(time.time() * 1000)
        rows = [{"person_id": person_id, "embedding": row.tolist(), "photo_key": key, "enrolled_by": enrolled_by,
                 "reason": reason, "enrolled_at": now_ms} for row, key in zip(matrix, photo_keys)]
        result = self._call("insert into", self.client.insert, self.collection, rows, timeout=self.timeout_s)
        return [int(i) for i in result["ids"]]

    def remove(self, person_id: str) -> int:
        """Delete every entry of ``person_id``; return how many were deleted."""
        _check_text("person_id", person_id, required=True)
        removed = 0
        while True:
            rows = self._call("query", self.client.query, self.collection, filter=f"person_id == {_quote(person_id)}",
                              output_fields=["id"], limit=MAX_WINDOW, consistency_level=STRONG, timeout=self.timeout_s)
            if not rows:
                return removed
            ids = [int(r["id"]) for r in rows]
            self._call("delete from", self.client.delete, self.collection, ids=ids, timeout=self.timeout_s)
            removed += len(ids)

    # ------------------------------------------------------------------ reads

    def search(self, vectors: np.ndarray, limit: int = 1, consistency_level: str = STRONG) -> list[list[Hit]]:
        """The ``limit`` closest entries to each row of ``vectors`` (n, 512), best first."""
        matrix = _as_matrix(vectors)
        if not 1 <= limit <= MAX_WINDOW:
            raise ValueError(f"limit must be in 1..{MAX_WINDOW}, got {limit}")
        if self.settings.index == "HNSW":
            params = {"metric_type": "COSINE", "params": {"ef": max(self.settings.hnsw_ef, limit)}}
        else:
            params = {"metric_type": "COSINE", "params": {}}
        results = self._call("search", self.client.search, self.collection, data=matrix.tolist(), limit=limit,
                             anns_field="embedding", output_fields=["person_id", "photo_key"], search_params=params,
                             consistency_level=consistency_level, timeout=self.timeout_s)
        hits = [[Hit(person_id=h["entity"]["person_id"], score=float(h["distance"]), entry_id=int(h["id"]),
                     photo_key=h["entity"].get("photo_key")) for h in row] for row in results]
        return hits + [[] for _ in range(len(matrix) - len(hits))]  # every query gets a list, even when empty

    def persons(self) -> dict[str, int]:
        """Enrolled person -> number of entries."""
        counts: Counter[str] = Counter()
        last: int | None = None
        while True:  # page by primary key (query results come back in primary-key order)
            rows = self._call("query", self.client.query, self.collection,
                              filter="" if last is None else f"id > {last}", output_fields=["id", "person_id"],
                              limit=MAX_WINDOW, consistency_level=STRONG, timeout=self.timeout_s)
            counts.update(r["person_id"] for r in rows)
            if len(rows) < MAX_WINDOW:
                return dict(counts)
            last = max(int(r["id"]) for r in rows)

    def count(self) -> int:
        """Number of entries."""
        rows = self._call("count", self.client.query, self.collection, filter="", output_fields=["count(*)"],
                          consistency_level=STRONG, timeout=self.timeout_s)
        return int(rows[0]["count(*)"]) if rows else 0

    # ------------------------------------------------------------------ helpers

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise WatchlistUnavailable(f"cannot {what} collection {self.collection!r}: {exc}") from exc


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    """(n, 512) float32, each row L2-normalised; a single (512,) vector is one row."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != DIM or matrix.shape[0] == 0:
        raise ValueError(f"expected vectors of shape (n, {DIM}) with n >= 1, got {np.shape(vectors)}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.all(np.isfinite(matrix)) or np.any(norms == 0):
        raise ValueError("vectors must be finite and non-zero")
    return matrix / norms


def _check_text(field: str, value: str, required: bool = False) -> None:
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"{field} must be a{' non-empty' if required else ''} string, got {value!r}")
    if len(value.encode()) > MAX_LEN[field]:
        raise ValueError(f"{field} is longer than {MAX_LEN[field]} bytes")
