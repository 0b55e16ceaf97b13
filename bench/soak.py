"""The pipeline under sustained load: is throughput steady, is every process's memory flat, does lag grow?

    python -m bench.soak [--minutes 20] [--cameras 3] [--fps 2] [--interval 30] [--warmup 2] [--size 960x540]

Several cameras read the footage of ``bench.pipeline`` (face-pairs people on the
watchlist, alternating with strangers, a face in every frame), made as long as
the soak, paced in real time as live cameras would be (``ingest.realtime``) and
sampled at ``--fps`` each. The offered load is cameras x fps frames per second;
the default (3 x 1.5 = 4.5) is about 40 % of what the whole pipeline sustains on
an idle 2-core machine (10.7 frames/s, BENCHMARKS.md), so that it is still
sustained when other work takes one of the cores. An offered load above the
pipeline's capacity makes lag grow whatever the code does, and with it the
memory of a stage that buffers what it has fetched: that measures capacity, not
a leak (the verdict's fps against published_fps says which).

One fresh local stack (``bench.pipeline.fresh_stacks``), the watchlist enrolled
as the pipeline bench does, one ``vigil.run.PipelineRun`` under a deployment of
its own. While ingest runs, every ``--interval`` seconds:

- events through each stage: ingest's frames published (``EVENTS_OUT``), each
  stream stage's input events finished (``EVENTS_IN``), from their /metrics;
  a counter that goes back (a restarted stage) continues from where it was;
- resident memory (``VmRSS``) of every process: each stage process, every
  process of each local service (broker, S3, Milvus: all of its process
  group) and this runner;
- consumer lag of each stage's group: committed offsets against the topic's end
  (``runtime.kafka.ConsumerLag``, which finds the end by reading the topic), so
  a slow commit counts as lag too.

The first ``--warmup`` minutes are left out of every slope (caches, the
allocator's first pools, the first tracks). Slopes are least squares over the
samples after it: memory in MB per minute (and over the last half of them: a
leak keeps its slope, a cache that fills flattens), lag in events per minute,
throughput as the slope of the per-minute rates (events/s per minute).

The verdict is ``steady=yes`` when, after warm-up:
- every process's memory slope is at most ``RSS_SLOPE_MAX`` MB/min;
- every group's lag slope is at most ``LAG_SLOPE_MAX`` events/min;
- ingest published at least ``RATE_MIN`` of the offered load, detect took in at
  least ``RATE_MIN`` of what ingest published (it kept up), and every stage's
  per-minute throughput has a slope within ``RATE_SLOPE_MAX`` of its mean per minute.
The last line printed is ``soak minutes=.. cameras=.. offered_fps=.. published_fps=.. fps=..
rss_slope_max=..MB/min(process) lag_slope_max=..(group) rate_slope_max=..%/min(stage) steady=yes|no``
(fps: frames through detect per second after warm-up).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import machine, markdown_table, print_machine, text_table

RSS_SLOPE_MAX = 1.0  # MB per minute: 1.4 GB a day, which no process here could hold for long
LAG_SLOPE_MAX = 2.0  # events per minute: a stage 1 % short of 6 frames/s falls behind by 3.6 a minute
RATE_MIN = 0.95  # of the offered frames per second, published by ingest
RATE_SLOPE_MAX = 0.01  # per-minute throughput may drift by at most 1 % of its mean per minute
RUNNER = "runner (this process)"


# --------------------------------------------------------------------------- sampling

@dataclass
class Sample:
    t_s: float  # seconds since ingest started
    rss_mb: dict[str, float]  # process label -> VmRSS
    pids: dict[str, int]  # process label -> pid (a stage's pid changes when it is restarted)
    events: dict[str, float]  # stage -> events through it so far (ingest: frames published)
    lag: dict[str, int | None]  # consumer group -> events behind (None: the broker did not answer)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def service_processes(home: Path) -> dict[str, int]:
    """label -> pid of every process of each local service (its launcher and everything in its process group)."""
    from localstack.stack import pids

    out: dict[str, int] = {}
    for service, members in pids(home).items():
        names = {pid: _command(pid) for pid in members}
        for pid, name in names.items():
            out[f"{service}/{name}" + (f"#{pid}" if list(names.values()).count(name) > 1 else "")] = pid
    return out


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class Sampler:
    """Samples a ``PipelineRun`` in a thread from the moment ingest starts until ingest exits (the drain is not load)."""

    def __init__(self, run, settings, stack_home: Path, interval_s: float, log=print):
        self.run, self.settings, self.stack_home, self.interval_s, self.log = run, settings, stack_home, interval_s, log
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)
        self._totals: dict[str, tuple[float, float]] = {}  # stage -> (offset from earlier processes, last raw value)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        from runtime.kafka import ConsumerLag
        from schemas.stages import INGEST, STREAM_STAGES

        while INGEST.name not in self.run.stages:
            if self._stop.wait(0.5):
                return
        started = time.monotonic()
        with ConsumerLag(self.settings.kafka, {s.consumer_group: s.source.name for s in STREAM_STAGES}) as lag:
            while True:
                ingest = self.run.stages[INGEST.name].process
                if ingest.poll() is not None and ingest.returncode == 0:
                    return  # footage done: what follows is the drain
                try:
                    self.samples.append(self._sample(time.monotonic() - started, lag))
                except Exception as exc:  # noqa: BLE001 - a sample lost is reported, the soak goes on
                    self.errors.append(f"{time.monotonic() - started:.0f}s: {exc!r}")
                s = self.samples[-1] if self.samples else None
                if s:
                    self.log(f"  t={s.t_s:5.0f}s  events {s.events}  lag {s.lag}  "
                             f"rss MB {', '.join(f'{k} {v:.0f}' for k, v in s.rss_mb.items())}")
                if self._stop.wait(self.interval_s - (time.monotonic() - started) % self.interval_s):
                    return

    def _sample(self, t_s: float, lag) -> Sample:
        from runtime import metrics
        from schemas.stages import INGEST, PIPELINE_STAGES

        pids = {name: stage.process.pid for name, stage in sorted(self.run.stages.items())}
        pids.update(service_processes(self.stack_home))
        pids[RUNNER] = os.getpid()
        memory = {label: mb for label, pid in pids.items() if (mb := rss_mb(pid)) is not None}
        events = {}
        for name, stage in sorted(self.run.stages.items()):
            spec = next((s for s in PIPELINE_STAGES if s.name == getattr(stage, "stage", name)), None)  # "match-2" runs match
            scrape = stage.scrape() if spec else None
            if not scrape:  # not a pipeline stage (audit), or not answering this time
                continue
            topic = spec.outputs[0] if spec is INGEST else spec.source
            value = scrape.get(metrics.EVENTS_OUT if spec is INGEST else metrics.EVENTS_IN, topic=topic.name)
            offset, last = self._totals.get(name, (0.0, 0.0))
            if value < last:  # a restarted process counts from 0 again
                offset += last
            self._totals[name] = (offset, value)
            events[name] = offset + value
        try:
            behind: dict[str, int | None] = dict(lag.lag())
        except Exception as exc:  # noqa: BLE001 - the broker did not answer this time
            self.errors.append(f"{t_s:.0f}s: lag not read: {exc!r}")
            behind = dict.fromkeys(lag.topics)
        return Sample(t_s, memory, {k: v for k, v in pids.items() if k in memory}, events, behind)


# --------------------------------------------------------------------------- analysis

def slope_per_min(t_s: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` per minute of ``t_s`` (NaN with fewer than 3 points)."""
    if len(values) < 3:
        return float("nan")
    return float(np.polyfit(np.asarray(t_s) / 60.0, np.asarray(values, dtype=np.float64), 1)[0])


@dataclass
class ProcessMemory:
    label: str
    start_mb: float  # first sample
    warm_mb: float  # first sample after warm-up
    end_mb: float
    slope: float  # MB per minute after warm-up
    late_slope: float  # ... over the last half of it: a leak keeps its slope, a cache that fills flattens
    pids: int  # distinct pids seen (more than 1: restarted)


@dataclass
class StageRate:
    stage: str
    per_minute: list[float]  # events/s in each whole minute after warm-up
    mean: float  # events/s over the whole span after warm-up
    slope: float  # (events/s) per minute, least squares over per_minute

    @property
    def drift(self) -> float:
        """The slope as a share of the mean, per minute."""
        return abs(self.slope) / self.mean if self.mean else float("nan")


@dataclass
class GroupLag:
    group: str
    warm: int | None
    end: int | None
    max: int | None
    slope: float  # events per minute after warm-up


@dataclass
class SoakResult:
    minutes: float
    cameras: int
    fps: float  # per camera
    warmup_s: float
    samples: list[Sample]
    errors: list[str] = field(default_factory=list)
    alerts: int = 0
    known_scenes: int = 0  # scenes of enrolled people, over every camera
    restarts: dict[str, int] = field(default_factory=dict)
    enrolled: dict[str, int] = field(default_factory=dict)

    @property
    def offered_fps(self) -> float:
        return self.cameras * self.fps

    @property
    def steady_samples(self) -> list[Sample]:
        return [s for s in self.samples if s.t_s >= self.warmup_s]

    def memory(self) -> list[ProcessMemory]:
        labels = list(dict.fromkeys(label for s in self.samples for label in s.rss_mb))
        out = []
        for label in labels:
            seen = [s for s in self.samples if label in s.rss_mb]
            warm = [s for s in seen if s.t_s >= self.warmup_s]
            late = [s for s in warm if s.t_s >= (warm[0].t_s + warm[-1].t_s) / 2] if warm else []
            out.append(ProcessMemory(label, seen[0].rss_mb[label], warm[0].rss_mb[label] if warm else float("nan"),
                                     seen[-1].rss_mb[label], slope_per_min([s.t_s for s in warm], [s.rss_mb[label] for s in warm]),
                                     slope_per_min([s.t_s for s in late], [s.rss_mb[label] for s in late]),
                                     len({s.pids[label] for s in seen})))
        return out

    def rates(self) -> list[StageRate]:
        steady = self.steady_samples
        out = []
        for stage in list(dict.fromkeys(k for s in steady for k in s.events)):
            points = [(s.t_s, s.events[stage]) for s in steady if stage in s.events]
            if len(points) < 2:
                continue
            t, n = (np.asarray(v, dtype=np.float64) for v in zip(*points))
            edges = np.arange(t[0], t[-1] + 1e-9, 60.0)  # whole minutes after warm-up, counts interpolated between samples
            per_minute = list(np.diff(np.interp(edges, t, n)) / 60.0)
            mean = float((n[-1] - n[0]) / (t[-1] - t[0]))
            out.append(StageRate(stage, per_minute, mean, slope_per_min(list(edges[:-1]), per_minute)))
        return out

    def lags(self) -> list[GroupLag]:
        steady = self.steady_samples
        out = []
        for group in list(dict.fromkeys(g for s in self.samples for g in s.lag)):
            points = [(s.t_s, s.lag[group]) for s in steady if s.lag.get(group) is not None]
            values = [v for _, v in points]
            out.append(GroupLag(group, values[0] if values else None, values[-1] if values else None,
                                max(values) if values else None, slope_per_min([t for t, _ in points], values)))
        return out

    def verdict(self) -> tuple[bool, str]:
        from schemas.stages import DETECT, INGEST

        memory, rates, lags = self.memory(), self.rates(), self.lags()
        worst_rss = max(memory, key=lambda m: m.slope if m.slope == m.slope else -np.inf, default=None)
        worst_lag = max(lags, key=lambda g: g.slope if g.slope == g.slope else -np.inf, default=None)
        worst_rate = max(rates, key=lambda r: r.drift if r.drift == r.drift else -np.inf, default=None)
        ingest = next((r for r in rates if r.stage == INGEST.name), None)
        detect = next((r for r in rates if r.stage == DETECT.name), None)
        published, fps = (ingest.mean if ingest else 0.0), (detect.mean if detect else 0.0)
        steady = bool(
            memory and lags and ingest and detect and len(self.steady_samples) >= 3
            and all(m.slope <= RSS_SLOPE_MAX for m in memory if m.slope == m.slope)
            and all(g.slope <= LAG_SLOPE_MAX for g in lags if g.slope == g.slope)
            and all(r.drift <= RATE_SLOPE_MAX for r in rates if r.drift == r.drift)
            and published >= RATE_MIN * self.offered_fps and fps >= RATE_MIN * published)
        line = (f"soak minutes={self.minutes:g} cameras={self.cameras} offered_fps={self.offered_fps:g} "
                f"published_fps={published:.2f} fps={fps:.2f} "
                f"rss_slope_max={_f(worst_rss and worst_rss.slope)}MB/min({worst_rss.label if worst_rss else '-'}) "
                f"lag_slope_max={_f(worst_lag and worst_lag.slope)}/min({worst_lag.group if worst_lag else '-'}) "
                f"rate_slope_max={_f(worst_rate and worst_rate.drift * 100)}%/min({worst_rate.stage if worst_rate else '-'}) "
                f"steady={'yes' if steady else 'no'}")
        return steady, line


def _f(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def report_tables(result: SoakResult, fmt=text_table) -> str:
    rows = [[m.label, _f(m.start_mb, ".0f"), _f(m.warm_mb, ".0f"), _f(m.end_mb, ".0f"), _f(m.slope, "+.2f"),
             _f(m.late_slope, "+.2f"), str(m.pids - 1)] for m in result.memory()]
    parts = [fmt(["process", "RSS MB at start", "after warm-up", "at end", "slope MB/min", "last half", "restarts"], rows)]
    rows = [[r.stage, str(len(r.per_minute)), _f(min(r.per_minute, default=None)), _f(r.mean),
             _f(max(r.per_minute, default=None)), _f(r.slope, "+.3f"), _f(r.drift * 100, ".2f")] for r in result.rates()]
    parts.append(fmt(["events/s (ingest: frames published)", "minutes", "min", "mean", "max", "slope /min",
                      "|slope| % of mean /min"], rows))
    rows = [[g.group, _f(g.warm, ".0f"), _f(g.end, ".0f"), _f(g.max, ".0f"), _f(g.slope, "+.2f")] for g in result.lags()]
    parts.append(fmt(["consumer group lag (events)", "after warm-up", "at end", "max", "slope /min"], rows))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- the soak

def soak_workload(folder: Path, *, minutes: float, size: tuple[int, int]):
    """The pipeline bench's footage, as long as the soak (every camera reads the same file, each as its own camera)."""
    from bench.pipeline import build_workload

    return build_workload(folder, seconds=minutes * 60, size=size)


def run_soak(workload, stacks, *, minutes: float, cameras: int, fps: float, interval_s: float, warmup_s: float,
             out=None, log=print) -> SoakResult:
    """Enrol on a stack from ``stacks()`` (``bench.pipeline.fresh_stacks``), then run ``cameras`` paced cameras on the
    workload's footage under a deployment while sampling (see the module doc)."""
    from accountability.actors import Actor
    from accountability.audit import AuditLog
    from bench.pipeline import enroll
    from detect.model import FaceDetector
    from embed.model import FaceEmbedder
    from runtime.device import pick_device
    from vigil.run import PipelineRun, run_deployment

    out = out or open(os.devnull, "w")  # noqa: SIM115 - the runner's progress lines
    with stacks() as stack:
        settings = stack.settings
        device = pick_device(settings.models.device)
        detector, embedder = FaceDetector(settings.detect, device), FaceEmbedder(settings.models.weights_dir, device)
        enrolled = enroll(settings, workload, detector, embedder)
        del detector, embedder  # the runner's memory is sampled too: no models held for nothing
        gc.collect()
        log(f"enrolled {sum(enrolled.values())} photos of {len(enrolled)} people")
        sources = [f"soak-{i + 1}={workload.footage}" for i in range(cameras)]
        paced = {"VIGIL_INGEST__TARGET_FPS": str(fps), "VIGIL_INGEST__REALTIME": "true"}
        run = PipelineRun(settings, sources, home=stack.home, out=out, stage_env={"ingest": paced})
        bench = Actor("bench", "cli", frozenset({"authoriser"}))
        with AuditLog(settings) as audit, run_deployment(settings, bench, run, case="bench", reason="soak benchmark",
                                                         persons=None, audit=audit):
            with Sampler(run, settings, stack.home, interval_s, log=log) as sampler:
                summary = run.execute(drain_timeout_s=minutes * 60 + 900)
    known = sum(1 for label in workload.shown if label != "stranger")
    return SoakResult(minutes, cameras, fps, warmup_s, sampler.samples, sampler.errors, alerts=len(summary.alerts),
                      known_scenes=known * cameras, restarts=dict(getattr(summary, "restarts", {})), enrolled=enrolled)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the soak: footage per camera (default 20)")
    parser.add_argument("--cameras", type=int, default=3, help="cameras, each reading the footage (default 3)")
    parser.add_argument("--fps", type=float, default=1.5, help="frames per second sampled from each camera (default 1.5)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples (default 30)")
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes left out of the slopes (default 2)")
    parser.add_argument("--size", default="960x540", help="footage frame size (default 960x540)")
    parser.add_argument("--verbose", action="store_true", help="show the runner's progress lines")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    args = parser.parse_args(argv)
    if args.warmup >= args.minutes:
        parser.error("--warmup must be shorter than --minutes")
    size = tuple(int(v) for v in args.size.lower().split("x"))

    from bench.pipeline import fresh_stacks

    info = machine()
    print_machine(info, f"soak {args.minutes:g} min, {args.cameras} cameras x {args.fps:g} fps, footage {args.size}")
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="vigil-bench-soak-") as tmp:
        t0 = time.perf_counter()
        workload = soak_workload(Path(tmp), minutes=args.minutes, size=size)
        log(f"footage: {workload.n_source_frames} frames in {time.perf_counter() - t0:.1f} s")
        result = run_soak(workload, fresh_stacks(Path(tmp)), minutes=args.minutes, cameras=args.cameras, fps=args.fps,
                          interval_s=args.interval, warmup_s=args.warmup * 60, out=sys.stderr if args.verbose else None, log=log)
    print()
    print(report_tables(result))
    if args.markdown:
        print()
        print(report_tables(result, markdown_table))
    print(f"\nsamples {len(result.samples)} ({len(result.steady_samples)} after warm-up), every {args.interval:g} s; "
          f"alerts {result.alerts} for {result.known_scenes} scenes of enrolled people over every camera; "
          f"restarts {result.restarts or 'none'}" + (f"; samples lost: {result.errors}" if result.errors else ""))
    print(f"thresholds: RSS slope <= {RSS_SLOPE_MAX:g} MB/min per process, lag slope <= {LAG_SLOPE_MAX:g} events/min per group, "
          f"ingest >= {RATE_MIN:.0%} of offered, throughput slope <= {RATE_SLOPE_MAX:.0%} of mean per minute per stage")
    print(f"load avg at the end {machine()['load_avg']}")
    steady, line = result.verdict()
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
