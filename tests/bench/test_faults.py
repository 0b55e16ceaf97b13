"""The fault suite's quick subset (``python -m bench.faults --quick``), through the same code, on a stack of its own.

Each case runs the whole pipeline under one fault (a stage killed mid-batch,
evidence deleted before match copies it, poison events on every topic) and
is compared with a fault-free run of the same footage: every case must hold
(nothing lost, no duplicate alert, its own checks passed).
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.services, pytest.mark.models, pytest.mark.slow]


def test_quick_fault_cases_hold(tmp_path, weights_dir):
    from bench.faults import QUICK, last_line, report, run_suite, select
    from bench.common import machine

    results, baseline = run_suite(select(None, quick=True), tmp_path)

    assert [r.name for r in results] == list(QUICK)
    assert baseline.alert_count >= 2 and all(len(baseline.ids[label]) for label in ("frames", "faces", "embeddings"))
    failed = {r.name: r.reasons for r in results if not r.held}
    assert not failed, failed
    assert all(r.comparison is not None and r.comparison.lost_total == 0 and r.comparison.duplicates == 0 for r in results)
    assert last_line(results) == f"faults={len(QUICK)} held={len(QUICK)} lost=0 duplicate_alerts=0"
    text = report(results, baseline, machine())
    assert text.rstrip().endswith("None.") and last_line(results) in text
