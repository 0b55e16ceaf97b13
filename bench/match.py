"""Watchlist search: Milvus (the embedded 2.3.5 server, HNSW from the settings) against NumPy brute force.

    python -m bench.match [--sizes 1000,100000] [--queries 300] [--batches 20]

Starts a local stack (``localstack.stack.running_stack``) in a temporary home,
and for each watchlist size builds a collection through
``storage.vectors.Watchlist`` (index, metric and HNSW parameters from
``MilvusSettings``), inserts the vectors in chunks, flushes, waits until the
index covers every row, then measures:

- **single**: one query per call, ``limit=1`` (what the match stage asks),
  searches/s = queries / wall time, latency p50/p99 per call;
- **batch 64**: 64 queries per call, searches/s = 64 x calls / wall time,
  latency p50/p99 per call;
- the same query vectors through an exact NumPy search (one matrix product
  and ``argpartition``) on the same vectors, in this process;
- **recall@1 / recall@10** of Milvus against the exact search: the fraction
  of the exact top-k entries that Milvus's top-k holds (``limit=k``).

Face-like data: ``size / 10`` identities, each a random unit centre with 10
entries around it (``centre + noise``, normalised; same-identity cosine
~0.64, as FaceNet's same-person pairs score), and queries that are fresh
samples of enrolled identities (a probe photo of someone on the list). The
exact neighbours are then the identity's 10 near-tied entries, which makes
recall@10 a real test, unlike uniform random vectors.

Searches use ``consistency_level="Bounded"`` (the match stage's choice) after
a Strong count has confirmed that every row is visible. ``--sizes`` accepts
1000000 (about 2 GB of vectors in this process, ~2.6 GB in Milvus and a long
index build on a small machine: the run prints how long each phase took).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import machine, percentile_ms, print_machine, print_tables

PER_IDENTITY = 10
NOISE = float(np.sqrt(0.5625 / 512))  # |noise| = 0.75: cosine to the centre ~0.8, between two entries ~0.64
INSERT_CHUNK = 5000


@dataclass
class SearchStats:
    engine: str
    mode: str  # "single" or "batch 64"
    calls: int
    queries: int
    wall_s: float
    latencies_s: list[float] = field(repr=False, default_factory=list)

    @property
    def per_s(self) -> float:
        return self.queries / self.wall_s if self.wall_s else float("inf")


@dataclass
class SizeResult:
    size: int
    identities: int
    index: str
    params: str
    insert_s: float
    index_s: float
    stats: list[SearchStats]
    recall_at_1: float
    recall_at_10: float
    top1_identity_milvus: float  # fraction of queries whose best hit is the query's own identity
    top1_identity_exact: float


def face_like(n: int, *, per_identity: int = PER_IDENTITY, seed: int = 0, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors (n, 512) float32 unit rows, identity of each row, centres (n_ids, 512))."""
    rng = np.random.default_rng(seed)
    n_ids = max(1, -(-n // per_identity))
    centres = rng.standard_normal((n_ids, 512), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.arange(n) // per_identity
    vectors = np.empty((n, 512), dtype=np.float32)
    for start in range(0, n, chunk):  # in chunks: 1M rows at once would double the memory
        stop = min(n, start + chunk)
        block = centres[labels[start:stop]] + NOISE * rng.standard_normal((stop - start, 512), dtype=np.float32)
        vectors[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors, labels, centres


def probes(centres: np.ndarray, count: int, *, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``count`` fresh samples of random identities: (queries, their identities)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, len(centres), count)
    q = centres[ids] + NOISE * rng.standard_normal((count, 512), dtype=np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), ids


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the ``k`` highest cosine similarities per query, best first (rows are unit vectors)."""
    scores = queries @ vectors.T
    k = min(k, vectors.shape[0])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)


def _insert(watchlist, vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Insert in chunks of ``INSERT_CHUNK`` rows; returns the Milvus id of each row."""
    ids = np.empty(len(vectors), dtype=np.int64)
    now_ms = int(time.time() * 1000)
    for start in range(0, len(vectors), INSERT_CHUNK):
        stop = min(len(vectors), start + INSERT_CHUNK)
        rows = [{"person_id": f"id-{labels[i]}", "embedding": vectors[i], "photo_key": f"bench/{i}.jpg",
                 "enrolled_by": "bench", "reason": "benchmark", "enrolled_at": now_ms,
                 "expires_at": now_ms + 86_400_000, "source": "synthetic"} for i in range(start, stop)]
        result = watchlist.client.insert(watchlist.collection, rows, timeout=300)
        ids[start:stop] = [int(i) for i in result["ids"]]
    return ids


def _wait_indexed(watchlist, n: int, timeout_s: float) -> None:
    client, name = watchlist.client, watchlist.collection
    client.flush(name, timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        info = client.describe_index(name, "embedding")
        if info.get("state") in ("Finished", 3) and int(info.get("indexed_rows", 0)) >= n:
            break
        if info.get("state") in ("Failed", 4):
            raise RuntimeError(f"index build failed: {info}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"index not built after {timeout_s:.0f} s: {info}")
        time.sleep(0.5)
    deadline = time.monotonic() + timeout_s
    while watchlist.count() < n:  # Strong: every row visible
        if time.monotonic() > deadline:
            raise TimeoutError("rows not visible")
        time.sleep(0.5)


def _time_calls(fn, batches: list[np.ndarray]) -> tuple[float, list[float]]:
    fn(batches[0])  # warm-up
    latencies = []
    started = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        fn(batch)
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - started, latencies


def run_size(milvus_settings, size: int, *, queries: int = 300, batches: int = 20, batch_size: int = 64,
             recall_queries: int = 200, seed: int = 0, index_timeout_s: float = 7200, log=print) -> SizeResult:
    """Build a watchlist of ``size`` face-like vectors in Milvus and measure it (see the module doc)."""
    from storage.vectors import Watchlist

    settings = milvus_settings.model_copy(update={"collection": f"vigil_bench_{size}"})
    t0 = time.perf_counter()
    vectors, labels, centres = face_like(size, seed=seed)
    log(f"  {size}: {len(centres)} identities generated in {time.perf_counter() - t0:.1f} s")
    with Watchlist(settings, timeout_s=600) as watchlist:
        watchlist.drop()
        watchlist.ensure_collection()
        try:
            t0 = time.perf_counter()
            ids = _insert(watchlist, vectors, labels)
            insert_s = time.perf_counter() - t0
            log(f"  {size}: inserted in {insert_s:.1f} s ({size / insert_s:.0f} rows/s)")
            t0 = time.perf_counter()
            _wait_indexed(watchlist, size, index_timeout_s)
            index_s = time.perf_counter() - t0
            log(f"  {size}: flushed and indexed in {index_s:.1f} s")

            q_single, _ = probes(centres, queries, seed=seed + 1)
            q_batch, _ = probes(centres, batches * batch_size, seed=seed + 2)
            single = [q_single[i:i + 1] for i in range(len(q_single))]
            batched = [q_batch[i:i + batch_size] for i in range(0, len(q_batch), batch_size)]
            stats = []

            def milvus_search(q: np.ndarray):
                return watchlist.search(q, limit=1, consistency_level="Bounded")

            def numpy_search(q: np.ndarray):
                return exact_topk(vectors, q, 1)

            for engine, fn in (("milvus", milvus_search), ("numpy exact", numpy_search)):
                for mode, calls in (("single", single), (f"batch {batch_size}", batched)):
                    wall, lat = _time_calls(fn, calls)
                    stats.append(SearchStats(engine, mode, len(calls), sum(len(c) for c in calls), wall, lat))

            q_recall, q_ids = probes(centres, recall_queries, seed=seed + 3)
            exact10 = ids[exact_topk(vectors, q_recall, 10)]
            hits10 = []
            for start in range(0, len(q_recall), batch_size):
                hits10 += watchlist.search(q_recall[start:start + batch_size], limit=10, consistency_level="Bounded")
            got10 = [[h.entry_id for h in row] for row in hits10]
            k10 = exact10.shape[1]
            recall10 = float(np.mean([len(set(g[:k10]) & set(e)) / k10 for g, e in zip(got10, exact10)]))
            recall1 = float(np.mean([bool(g) and g[0] == e[0] for g, e in zip(got10, exact10)]))
            own = [f"id-{i}" for i in q_ids]
            top1_milvus = float(np.mean([bool(row) and row[0].person_id == o for row, o in zip(hits10, own)]))
            top1_exact = float(np.mean(labels[exact_topk(vectors, q_recall, 1)[:, 0]] == q_ids))
        finally:
            watchlist.drop()
    ms = settings
    params = f"M={ms.hnsw_m} efConstruction={ms.hnsw_ef_construction} ef={ms.hnsw_ef}" if ms.index == "HNSW" else ""
    return SizeResult(size, len(centres), ms.index, params, insert_s, index_s, stats, recall1, recall10, top1_milvus, top1_exact)


HEADER = ["size", "engine", "index", "mode", "calls", "searches/s", "p50 ms/call", "p99 ms/call", "recall@1", "recall@10"]


def table_rows(results: list[SizeResult]) -> list[list[str]]:
    rows = []
    for r in results:
        for s in r.stats:
            milvus = s.engine == "milvus"
            rows.append([f"{r.size:,}", s.engine, r.index if milvus else "exact", s.mode, str(s.calls), f"{s.per_s:.0f}",
                         f"{percentile_ms(s.latencies_s, 50):.2f}", f"{percentile_ms(s.latencies_s, 99):.2f}",
                         f"{r.recall_at_1:.3f}" if milvus else "1 (reference)", f"{r.recall_at_10:.3f}" if milvus else "1 (reference)"])
    return rows


BUILD_HEADER = ["size", "identities", "index", "params", "insert s", "rows/s", "flush+index s", "top-1 own identity (milvus / exact)"]


def build_rows(results: list[SizeResult]) -> list[list[str]]:
    return [[f"{r.size:,}", f"{r.identities:,}", r.index, r.params, f"{r.insert_s:.1f}", f"{r.size / r.insert_s:.0f}",
             f"{r.index_s:.1f}", f"{r.top1_identity_milvus:.3f} / {r.top1_identity_exact:.3f}"] for r in results]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.match", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,100000", help="watchlist sizes (default 1000,100000; 1000000 allowed)")
    parser.add_argument("--queries", type=int, default=300, help="single-query calls per size (default 300)")
    parser.add_argument("--batches", type=int, default=20, help="calls of 64 queries per size (default 20)")
    parser.add_argument("--recall-queries", type=int, default=200, help="queries for recall (default 200)")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]

    from runtime.settings import load_settings
    from localstack.stack import running_stack

    info = machine()
    print_machine(info)
    run_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-match-") as tmp:
        t0 = time.perf_counter()
        with running_stack(Path(tmp) / "home") as stack:
            os.environ["VIGIL_CONFIG"] = stack["config"]
            settings = load_settings()
            print(f"stack up in {time.perf_counter() - t0:.1f} s; Milvus {settings.milvus.index} "
                  f"M={settings.milvus.hnsw_m} efConstruction={settings.milvus.hnsw_ef_construction} ef={settings.milvus.hnsw_ef}",
                  flush=True)
            results = []
            for size in sizes:
                t0 = time.perf_counter()
                results.append(run_size(settings.milvus, size, queries=args.queries, batches=args.batches,
                                        recall_queries=args.recall_queries, log=lambda s: print(s, file=sys.stderr, flush=True)))
                print(f"  size {size:,}: {time.perf_counter() - t0:.1f} s in all", flush=True)
    print()
    print_tables(BUILD_HEADER, build_rows(results), args.markdown)
    print()
    print_tables(HEADER, table_rows(results), args.markdown)
    print(f"\nwhole run {time.perf_counter() - run_started:.0f} s; load avg at the end {machine()['load_avg']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
