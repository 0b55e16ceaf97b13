"""The performance benches run end to end on tiny inputs (they work; no timing is asserted)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


# --------------------------------------------------------------------------- bench.common

def test_machine_and_tables():
    from bench.common import machine, markdown_table, percentile_ms, text_table, timed_runs

    info = machine()
    assert info["cores"] >= 1 and info["cpu"] and info["load_avg"] and info["commit"]
    assert info["gpu"] == ("none" if not torch.cuda.is_available() else torch.cuda.get_device_name(0))
    times = timed_runs(lambda: None, min_time_s=0, min_runs=3)
    assert len(times) == 3 and all(t >= 0 for t in times)
    assert percentile_ms([0.001, 0.002, 0.003], 50) == pytest.approx(2.0)
    assert markdown_table(["a", "b"], [["1", "2"]]).splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    assert text_table(["a", "b"], [["1", "22"]]).splitlines()[2].split() == ["1", "22"]


# --------------------------------------------------------------------------- bench.models

@pytest.mark.models
def test_models_bench_tiny(weights_dir, device):
    from bench.models import HEADER, NO_GPU, gpu_placeholders, run, table_rows

    rows = run(device=device, threads=1, sizes=((640, 480),), detect_batches=(1, 2), embed_batches=(1, 2),
               min_time_s=0, min_runs=1, weights_dir=weights_dir)
    assert [(r.model.split()[0], r.batch) for r in rows] == [("detect", 1), ("detect", 2), ("embed", 1), ("embed", 2)]
    assert all(r.median_s > 0 and r.per_s > 0 and r.runs >= 1 for r in rows)
    assert rows[0].note == "1 face(s) found in 1 frame(s)"
    placeholders = gpu_placeholders(((320, 240),), (1,))
    assert all(r.note == NO_GPU and r.median_s is None for r in placeholders)
    assert {r.batch for r in placeholders if r.model.startswith("embed")} == {1, 8, 32, 128}
    assert all(len(row) == len(HEADER) for row in table_rows(rows + placeholders))


@pytest.mark.models
def test_models_ablations_tiny(weights_dir, device):
    from bench.models import HEADER, ablations, table_rows

    rows = ablations(device=device, threads=1, size=(320, 240), rounds=2, min_time_s=0, weights_dir=weights_dir)
    assert [r.model.split(",")[0] for r in rows] == ["detect (MTCNN)"] * 3 + ["embed (InceptionResnetV1)"] * 4
    assert [r.batch for r in rows] == [1, 1, 1, 1, 1, 8, 8]
    assert all(r.median_s > 0 and r.runs >= 6 for r in rows)
    assert all(len(row) == len(HEADER) for row in table_rows(rows))


# --------------------------------------------------------------------------- bench.match

def test_face_like_data_and_exact_search():
    from bench.match import PER_IDENTITY, exact_topk, face_like, probes

    vectors, labels, centres = face_like(200, seed=3)
    assert vectors.shape == (200, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert len(centres) == 200 // PER_IDENTITY and labels[PER_IDENTITY] == 1
    same = vectors[0] @ vectors[1]
    other = vectors[0] @ vectors[PER_IDENTITY]
    assert 0.45 < same < 0.85 and abs(other) < 0.3  # face-like: same identity ~0.64, others ~0
    queries, ids = probes(centres, 8, seed=4)
    top = exact_topk(vectors, queries, PER_IDENTITY)
    assert top.shape == (8, PER_IDENTITY)
    assert all(set(labels[row]) == {i} for row, i in zip(top, ids))  # the identity's entries come first
    scores = queries @ vectors.T
    assert all(scores[q, top[q, 0]] == scores[q].max() for q in range(8))


@pytest.mark.services
def test_match_bench_tiny(settings):
    from bench.match import HEADER, build_rows, run_size, table_rows

    result = run_size(settings.milvus, 300, queries=5, batches=2, batch_size=4, recall_queries=8, log=lambda s: None)
    assert result.size == 300 and result.identities == 30
    assert {(s.engine, s.mode) for s in result.stats} == {("milvus", "single"), ("milvus", "batch 4"),
                                                           ("numpy exact", "single"), ("numpy exact", "batch 4")}
    assert all(s.queries == s.calls * (1 if s.mode == "single" else 4) for s in result.stats)
    assert 0 <= result.recall_at_1 <= 1 and 0 < result.recall_at_10 <= 1
    assert result.top1_identity_exact == 1.0
    assert all(len(row) == len(HEADER) for row in table_rows([result]))
    assert build_rows([result])[0][0] == "300"


# --------------------------------------------------------------------------- bench.pipeline

@pytest.mark.slow
@pytest.mark.services
@pytest.mark.models
def test_pipeline_bench_tiny(weights_dir, tmp_path, monkeypatch):
    """Two seconds of footage through the bare loop and the full pipeline, on a stack of its own."""
    import os

    from bench.pipeline import BenchResult, build_workload, fresh_stacks, report_tables, run_bench

    monkeypatch.setenv("VIGIL_CONFIG", os.environ.get("VIGIL_CONFIG", ""))  # fresh_stacks points it elsewhere; restored after
    monkeypatch.setenv("VIGIL_MODELS__TORCH_THREADS", "1")
    monkeypatch.setenv("VIGIL_MODELS__WEIGHTS_DIR", str(weights_dir))
    workload = build_workload(tmp_path, seconds=2, size=(320, 240))
    assert workload.n_source_frames == 20 and workload.watchlist
    result = run_bench(workload, fresh_stacks(tmp_path), fps=5, bare_threads=1, latency=False, bare_runs=1,
                       log=lambda s: None)
    assert isinstance(result, BenchResult) and sum(result.enrolled.values()) > 0
    assert len(result.bare) == 1 and result.bare[0].frames == 10 and result.bare_fps > 0
    tp = result.throughput
    assert tp.frames == 10 and tp.wall_s and tp.wall_s > 0 and tp.fps > 0 and result.ratio > 0
    assert tp.handled["detect"] == (10, 10)
    assert set(tp.peak_rss_mb) == {"detect", "embed", "match", "ingest", "audit"} and all(v > 0 for v in tp.peak_rss_mb.values())
    assert tp.cpu_s["detect"] > 0
    text = report_tables(result)
    assert "bare loop, run 1" in text and "pipeline, throughput" in text


# --------------------------------------------------------------------------- bench.templates

def test_template_strategies_and_duplicate_scores_on_vectors_with_known_answers():
    from bench.templates import STRATEGIES, compare_strategies, duplicate_scores

    e = np.eye(4, dtype=np.float32)
    # person a: two photos along x and y, probed along their mean; person b: along z, probed along z
    mid = (e[0] + e[1]) / np.sqrt(2)
    vectors = {"a": [e[0], e[1], mid], "b": [e[2], e[2], e[2]]}
    results = {r.strategy: r for r in compare_strategies(vectors, enrolled=2)}
    assert set(results) == set(STRATEGIES)
    every, mean = results[STRATEGIES[0]], results[STRATEGIES[1]]
    np.testing.assert_allclose(sorted(every.genuine), sorted([1 / np.sqrt(2), 1.0]), atol=1e-6)  # best single entry
    np.testing.assert_allclose(sorted(mean.genuine), [1.0, 1.0], atol=1e-6)  # the mean of x and y is the probe itself
    np.testing.assert_allclose(every.impostor, [0.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="two people"):
        compare_strategies(vectors, enrolled=3)

    copies = {"a": [e[0], None, mid], "b": [e[2], e[2], e[2]]}
    different, same_photo = duplicate_scores(vectors, copies)
    assert len(different) == 6 and len(same_photo) == 5  # 3 + 3 pairs; one copy had no face
    np.testing.assert_allclose(same_photo, 1.0, atol=1e-6)
