"""The watchlist: enrolled face embeddings in Milvus, through pymilvus's ``MilvusClient``.

One entity per enrolled photo: an auto id, the person, the 512-d embedding
(stored L2-normalised; the index metric is COSINE, so a score is a cosine
similarity, higher is closer), the photo's S3 key, where the photo came from,
who enrolled it, why, when, and when it expires. Only what both the Milvus
2.3.5 server and Milvus Lite support is used: FLAT/HNSW with COSINE,
``==``/``in``/range filters, delete by primary key.

An entry past its ``expires_at`` is never returned by ``search`` (the filter
is part of every search, so expiry does not wait for the sweeper that purges
expired entries, ``accountability.watchlist``).

Reads that must see the latest enrolments and removals use Strong consistency
(Milvus's default, Bounded, answers from a view up to seconds old); the match
stage may pass ``consistency_level="Bounded"`` to ``search`` for throughput.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

import numpy as np
from pymilvus import DataType, MilvusClient

from runtime.settings import MilvusSettings

DIM = 512
MAX_LEN = {"person_id": 128, "photo_key": 1024, "enrolled_by": 128, "reason": 1024, "source": 1024}
ENTRY_FIELDS = ["id", "person_id", "photo_key", "source", "enrolled_by", "reason", "enrolled_at", "expires_at"]
MAX_WINDOW = 16384  # Milvus's largest query/search result window (offset + limit)
STRONG = "Strong"


class WatchlistError(RuntimeError):
    """A watchlist operation failed in Milvus."""


class WatchlistMissing(WatchlistError):
    """The watchlist collection does not exist: a permanent error for a reader (match), never papered over."""


class WatchlistUnavailable(WatchlistError, ConnectionError):
    """Milvus did not serve the request. A ConnectionError, so the stage runtime retries instead of dropping the event."""


@dataclass(frozen=True)
class Entry:
    """One watchlist entry (an enrolled photo) without its vector; times in epoch milliseconds."""

    id: int
    person_id: str
    photo_key: str
    source: str
    enrolled_by: str
    reason: str
    enrolled_at: int
    expires_at: int


def epoch_ms(ts: datetime | None = None) -> int:
    """``ts`` (default: now) in epoch milliseconds, the unit of ``enrolled_at`` and ``expires_at``."""
    return int((ts or datetime.now(timezone.utc)).timestamp() * 1000)


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
        schema.add_field("expires_at", DataType.INT64, description="epoch milliseconds; never matched from then on")
        schema.add_field("source", DataType.VARCHAR, max_length=MAX_LEN["source"], description="where the photo came from")
        return schema

    def _index_params(self):
        params = MilvusClient.prepare_index_params()
        if self.settings.index == "HNSW":
            params.add_index("embedding", index_type="HNSW", index_name="embedding", metric_type="COSINE",
                             params={"M": self.settings.hnsw_m, "efConstruction": self.settings.hnsw_ef_construction})
        else:
            params.add_index("embedding", index_type="FLAT", index_name="embedding", metric_type="COSINE")
        return params

    def ensure_collection(self, *, create: bool = True) -> None:
        """Create the collection and its index when missing (``create=False``: raise ``WatchlistMissing``), check its
        shape, and load it."""
        name = self.collection
        try:
            if not self.client.has_collection(name):
                if not create:
                    raise WatchlistMissing(f"watchlist collection {name!r} does not exist (dropped, or nobody enrolled yet): "
                                           "enrol into it, or restore it; an empty one is not made in its place")
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
        missing = {"id", "embedding", *MAX_LEN, "enrolled_at", "expires_at"} - set(fields)
        if missing & {"expires_at", "source"}:
            raise WatchlistError(
                f"collection {self.collection!r} was made before watchlist entries expired and recorded their source (it lacks "
                f"{sorted(missing)}), so its entries could match for ever. Enrol again into a new collection (milvus.collection) "
                f"with an expiry and a source per photo, then drop this one.")
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
            reason: str, *, expires_at: datetime, sources: Sequence[str] | None = None) -> list[int]:
        """Enrol ``person_id`` with one entity per row of ``vectors`` (n, 512), each expiring at ``expires_at`` and
        with the source of its photo (``sources``, one per vector); return the new entry ids."""
        matrix = _as_matrix(vectors)
        sources = [""] * len(matrix) if sources is None else sources
        for name, values in (("photo key", photo_keys), ("source", sources)):
            if isinstance(values, str) or len(values) != len(matrix):
                raise ValueError(f"need one {name} per vector ({len(matrix)}), got {values!r}")
        _check_text("person_id", person_id, required=True)
        _check_text("enrolled_by", enrolled_by, required=True)
        _check_text("reason", reason)
        for key, source in zip(photo_keys, sources):
            _check_text("photo_key", key)
            _check_text("source", source)
        now_ms = int(time.time() * 1000)
        until_ms = epoch_ms(expires_at)
        if until_ms <= now_ms:
            raise ValueError(f"expires_at must lie in the future, got {expires_at.isoformat()}")
        rows = [{"person_id": person_id, "embedding": row.tolist(), "photo_key": key, "enrolled_by": enrolled_by,
                 "reason": reason, "enrolled_at": now_ms, "expires_at": until_ms, "source": source}
                for row, key, source in zip(matrix, photo_keys, sources)]
        result = self._call("insert into", self.client.insert, self.collection, rows, timeout=self.timeout_s)
        return [int(i) for i in result["ids"]]

    def remove(self, person_id: str) -> int:
        """Delete every entry of ``person_id``; return how many were deleted."""
        return len(self.delete(self.entries(person_id=person_id)))

    def delete(self, entries: Sequence[Entry]) -> list[Entry]:
        """Delete these entries (by primary key); return them."""
        ids = [e.id for e in entries]
        for start in range(0, len(ids), MAX_WINDOW):
            self._call("delete from", self.client.delete, self.collection, ids=ids[start:start + MAX_WINDOW], timeout=self.timeout_s)
        return list(entries)

    def compact(self) -> int:
        """Ask Milvus to compact the collection, so deleted vectors leave its segments too; return the compaction id."""
        return int(self._call("compact", self.client.compact, self.collection, timeout=self.timeout_s))

    # ------------------------------------------------------------------ reads

    def search(self, vectors: np.ndarray, limit: int = 1, consistency_level: str = STRONG, *,
               persons: Sequence[str] | None = None, now: datetime | None = None) -> list[list[Hit]]:
        """The ``limit`` closest entries in force at ``now`` (default: now) to each row of ``vectors`` (n, 512), best
        first; with ``persons``, only their entries."""
        matrix = _as_matrix(vectors)
        expr = f"expires_at > {epoch_ms(now)}"
        if persons is not None:
            if not persons:
                return [[] for _ in range(len(matrix))]
            expr += f" and person_id in [{', '.join(_quote(p) for p in persons)}]"
        if not 1 <= limit <= MAX_WINDOW:
            raise ValueError(f"limit must be in 1..{MAX_WINDOW}, got {limit}")
        if self.settings.index == "HNSW":
            params = {"metric_type": "COSINE", "params": {"ef": max(self.settings.hnsw_ef, limit)}}
        else:
            params = {"metric_type": "COSINE", "params": {}}
        results = self._call("search", self.client.search, self.collection, data=matrix.tolist(), limit=limit,
                             filter=expr, anns_field="embedding", output_fields=["person_id", "photo_key"], search_params=params,
                             consistency_level=consistency_level, timeout=self.timeout_s)
        hits = [[Hit(person_id=h["entity"]["person_id"], score=float(h["distance"]), entry_id=int(h["id"]),
                     photo_key=h["entity"].get("photo_key")) for h in row] for row in results]
        return hits + [[] for _ in range(len(matrix) - len(hits))]  # every query gets a list, even when empty

    def entries(self, *, person_id: str | None = None, expired_at: datetime | None = None) -> list[Entry]:
        """Entries (Strong consistency, in primary-key order): all, one person's, or those expired at ``expired_at``."""
        conditions = []
        if person_id is not None:
            _check_text("person_id", person_id, required=True)
            conditions.append(f"person_id == {_quote(person_id)}")
        if expired_at is not None:
            conditions.append(f"expires_at <= {epoch_ms(expired_at)}")
        found: list[Entry] = []
        last: int | None = None
        while True:  # page by primary key (query results come back in primary-key order)
            expr = " and ".join(conditions + ([f"id > {last}"] if last is not None else []))
            rows = self._call("query", self.client.query, self.collection, filter=expr, output_fields=ENTRY_FIELDS,
                              limit=MAX_WINDOW, consistency_level=STRONG, timeout=self.timeout_s)
            found += [Entry(**{name: row[name] for name in ENTRY_FIELDS}) for row in rows]
            if len(rows) < MAX_WINDOW:
                return sorted(found, key=lambda e: e.id)
            last = max(int(r["id"]) for r in rows)

    def persons(self) -> dict[str, int]:
        """Enrolled person -> number of entries (expired ones included until they are purged)."""
        return dict(Counter(e.person_id for e in self.entries()))

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
