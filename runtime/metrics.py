"""The Prometheus metrics every stage exposes, and a reader for a stage's /metrics page.

Labels say which stage and topic; a stage defines its own beside these with the
same conventions (``vigil_`` prefix, a ``stage`` label). Operators and
benchmarks read a scraped page through ``Scrape`` with the metric objects
below, never with metric names spelled out.
"""

from __future__ import annotations

import urllib.request

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

# The metrics every stage exposes. Labels say which stage and topic; a stage adds its own beside these.
EVENTS_IN = Counter(
    "vigil_events_in_total", "Input events a stage has finished with: outputs delivered, or dead-lettered.", ["stage", "topic"],
)
EVENTS_OUT = Counter("vigil_events_out_total", "Events a stage produced.", ["stage", "topic"])
DEAD_LETTERS = Counter("vigil_dead_letters_total", "Events sent to the dead-letter topic (poison events), by reason.", ["stage", "reason"])
RETRIES = Counter(
    "vigil_retries_total", "Retries after a transient error (a dependency unavailable, a failed delivery), by cause.", ["stage", "cause"],
)
BATCH_SIZE = Histogram("vigil_batch_size", "Events per processed batch.", ["stage"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
PROCESS_SECONDS = Histogram(
    "vigil_process_seconds", "Time spent processing one batch (model or search time included).", ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LAG_SECONDS = Histogram(
    "vigil_event_age_seconds", "Age of an event's source time when the stage finished with it.", ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 5, 10, 30, 60, 300),
)
READY = Gauge("vigil_ready", "1 when the stage is ready to serve.", ["stage"])
LAST_BATCH_DONE = Gauge(
    "vigil_last_batch_done_timestamp_seconds",
    "Wall-clock time (Unix seconds) at which the stage last finished a batch, outputs delivered.", ["stage"],
)


class Scrape:
    """One /metrics page, parsed: ``scrape.get(EVENTS_IN, topic=...)`` sums the matching samples."""

    def __init__(self, text: str = ""):
        self._samples = [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]

    @classmethod
    def fetch(cls, url: str, timeout_s: float = 2.0) -> Scrape:
        """The page at ``url``; empty when the endpoint cannot be reached (a stage starting or gone)."""
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as reply:
                return cls(reply.read().decode())
        except OSError:
            return cls()

    def __bool__(self) -> bool:
        return bool(self._samples)

    def get(self, metric: MetricWrapperBase, part: str | None = None, **labels: str) -> float:
        """Sum of ``metric``'s samples carrying ``labels``; ``part`` picks a histogram's sum, count or bucket."""
        described = metric.describe()[0]
        if described.type == "histogram":
            if part not in ("sum", "count", "bucket"):
                raise ValueError(f"{described.name} is a histogram: part must be sum, count or bucket")
            name = f"{described.name}_{part}"
        elif part is not None:
            raise ValueError(f"{described.name} is a {described.type}: it has no parts")
        else:
            name = f"{described.name}_total" if described.type == "counter" else described.name
        return sum(value for sample, sample_labels, value in self._samples
                   if sample == name and all(sample_labels.get(k) == v for k, v in labels.items()))

    def quantile(self, histogram: Histogram, q: float) -> float | None:
        """Prometheus-style ``histogram_quantile`` over the cumulative buckets (linear inside a bucket)."""
        name = f"{histogram.describe()[0].name}_bucket"
        per_le: dict[float, float] = {}
        for sample, labels, value in self._samples:
            if sample == name:
                le = float(labels["le"])
                per_le[le] = per_le.get(le, 0.0) + value
        buckets = sorted(per_le.items())
        if not buckets or buckets[-1][1] == 0:
            return None
        rank = q * buckets[-1][1]
        prev_le, prev_count = 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if le == float("inf"):
                    return prev_le
                return prev_le + (le - prev_le) * ((rank - prev_count) / (count - prev_count) if count > prev_count else 0)
            prev_le, prev_count = le, count
        return prev_le
