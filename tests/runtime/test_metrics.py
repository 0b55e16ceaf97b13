"""runtime.metrics.Scrape reads a /metrics page by metric object (pure logic, no services)."""

from __future__ import annotations

import pytest

from runtime import metrics
from runtime.metrics import Scrape

PAGE = """\
# TYPE vigil_events_in_total counter
vigil_events_in_total{stage="detect",topic="vigil.frames.v1"} 7.0
vigil_events_in_total{stage="detect",topic="vigil.other.v1"} 2.0
# TYPE vigil_ready gauge
vigil_ready{stage="detect"} 1.0
# TYPE vigil_event_age_seconds histogram
vigil_event_age_seconds_bucket{stage="detect",le="0.5"} 2.0
vigil_event_age_seconds_bucket{stage="detect",le="1.0"} 4.0
vigil_event_age_seconds_bucket{stage="detect",le="+Inf"} 4.0
vigil_event_age_seconds_sum{stage="detect"} 2.5
vigil_event_age_seconds_count{stage="detect"} 4.0
"""


def test_counters_gauges_and_histogram_parts():
    scrape = Scrape(PAGE)
    assert scrape.get(metrics.EVENTS_IN) == 9
    assert scrape.get(metrics.EVENTS_IN, topic="vigil.frames.v1") == 7
    assert scrape.get(metrics.EVENTS_IN, topic="missing") == 0
    assert scrape.get(metrics.READY, stage="detect") == 1
    assert scrape.get(metrics.LAG_SECONDS, "count") == 4 and scrape.get(metrics.LAG_SECONDS, "sum") == 2.5
    assert scrape.get(metrics.LAG_SECONDS, "bucket", le="1.0") == 4


def test_quantile_interpolates_inside_a_bucket():
    scrape = Scrape(PAGE)
    assert scrape.quantile(metrics.LAG_SECONDS, 0.5) == pytest.approx(0.5)
    assert scrape.quantile(metrics.LAG_SECONDS, 0.75) == pytest.approx(0.75)
    assert Scrape().quantile(metrics.LAG_SECONDS, 0.5) is None


def test_wrong_part_is_refused_and_an_unreachable_page_is_empty():
    with pytest.raises(ValueError, match="histogram"):
        Scrape(PAGE).get(metrics.LAG_SECONDS)
    with pytest.raises(ValueError, match="no parts"):
        Scrape(PAGE).get(metrics.EVENTS_IN, "sum")
    assert not Scrape.fetch("http://127.0.0.1:9/metrics", timeout_s=0.5)
