"""The soak bench: its analysis on samples with known answers, and a short run of the same code on a stack of its own."""

from __future__ import annotations

import pytest


def _sample(t_s, rss, events, lag):
    from bench.soak import Sample

    return Sample(t_s, rss, {label: 1 for label in rss}, events, lag)


def test_slopes_rates_and_verdict_on_known_samples():
    from bench.soak import SoakResult

    # 0-60 s warm-up (memory climbs), then detect flat at 500 MB, broker +3 MB/min, lag flat at 4, 6 frames/s.
    samples = [_sample(t, {"detect": 400 + min(t, 60) * 100 / 60, "kafka/tansu": 100 + t / 20},
                       {"ingest": 6.0 * t, "detect": 6.0 * t - 4}, {"vigil-detect": 4})
               for t in range(0, 301, 30)]
    result = SoakResult(minutes=5, cameras=3, fps=2, warmup_s=60, samples=samples)
    memory = {m.label: m for m in result.memory()}
    assert memory["detect"].start_mb == 400 and memory["detect"].warm_mb == 500 and memory["detect"].slope == pytest.approx(0, abs=1e-9)
    assert memory["kafka/tansu"].slope == pytest.approx(3.0) and memory["kafka/tansu"].end_mb == pytest.approx(115)
    assert memory["kafka/tansu"].late_slope == pytest.approx(3.0) and memory["detect"].late_slope == pytest.approx(0, abs=1e-9)
    rates = {r.stage: r for r in result.rates()}
    assert rates["ingest"].per_minute == pytest.approx([6.0] * 4) and rates["ingest"].mean == pytest.approx(6.0)
    assert rates["detect"].slope == pytest.approx(0, abs=1e-9)
    (lag,) = result.lags()
    assert (lag.group, lag.warm, lag.end, lag.max) == ("vigil-detect", 4, 4, 4) and lag.slope == pytest.approx(0, abs=1e-9)
    steady, line = result.verdict()
    assert not steady  # the broker's 3 MB/min is over the threshold
    assert line.startswith("soak minutes=5 cameras=3 offered_fps=6 published_fps=6.00 fps=6.00 rss_slope_max=3.00MB/min(kafka/tansu) ")
    assert line.endswith(" steady=no")

    for s in samples:
        s.rss_mb["kafka/tansu"] = 100.0
    assert result.verdict()[0]
    for s in samples:  # detect falls behind: lag grows by 2 events per 30 s
        s.lag["vigil-detect"] = 4 + 2 * int(s.t_s // 30)
    steady, line = result.verdict()
    assert not steady and "lag_slope_max=4.00/min(vigil-detect)" in line
    for s in samples:  # lag flat again, but detect takes in 10 % less than ingest publishes
        s.lag["vigil-detect"] = 4
        s.events["detect"] = 5.4 * s.t_s
    steady, line = result.verdict()
    assert not steady and " fps=5.40 " in line


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.models
def test_soak_short_run(weights_dir, tmp_path, monkeypatch):
    """Two cameras on 40 s of small footage, sampled every 5 s: every process is seen, every stage moves, lag is read."""
    import os

    from bench.pipeline import fresh_stacks
    from bench.soak import RUNNER, report_tables, run_soak, soak_workload

    monkeypatch.setenv("VIGIL_CONFIG", os.environ.get("VIGIL_CONFIG", ""))  # fresh_stacks points it elsewhere; restored after
    monkeypatch.setenv("VIGIL_MODELS__TORCH_THREADS", "1")
    monkeypatch.setenv("VIGIL_MODELS__WEIGHTS_DIR", str(weights_dir))
    workload = soak_workload(tmp_path, minutes=40 / 60, size=(320, 240))
    result = run_soak(workload, fresh_stacks(tmp_path), minutes=40 / 60, cameras=2, fps=2, interval_s=5, warmup_s=10,
                      log=lambda s: None)
    assert len(result.samples) >= 6 and len(result.steady_samples) >= 4, result.errors
    labels = {m.label for m in result.memory()}
    assert {"detect", "embed", "match", "audit", "ingest", RUNNER} <= labels
    for service in ("kafka", "s3", "milvus"):
        assert any(label.startswith(f"{service}/") for label in labels), labels
    assert all(m.end_mb > 0 for m in result.memory())
    rates = {r.stage: r for r in result.rates()}
    assert set(rates) == {"ingest", "detect", "embed", "match"}
    assert rates["ingest"].mean == pytest.approx(4.0, rel=0.25)  # 2 cameras x 2 fps, paced
    assert rates["detect"].mean > 0 and rates["match"].mean > 0
    assert {g.group for g in result.lags()} == {"vigil-detect", "vigil-embed", "vigil-match", "vigil-audit"}
    assert all(g.end is not None for g in result.lags())
    assert result.alerts > 0
    text = report_tables(result)
    assert "slope MB/min" in text and "consumer group lag" in text
    assert result.verdict()[1].startswith("soak minutes=0.666667 cameras=2 offered_fps=4 ")
