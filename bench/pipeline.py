"""The whole pipeline against the bare models, on the same footage, device and cores, in one run.

    python -m bench.pipeline [--seconds 40] [--fps 5] [--size 960x540] [--stage-threads detect=2,embed=1]

One camera: footage made with ``synthetic.footage.make_footage`` from face-pairs
photos (people on the watchlist shown in photos that were *not* enrolled,
alternating with strangers), encoded at 10 fps and sampled at ``--fps`` (5)
by ingest, as a camera would be. Each pipeline run gets a fresh local stack
in a temporary home (a stage that was stopped before its last commit would
otherwise replay those events into the next run), the people are enrolled
with ``vigil.enroll.Enroller``, and a bare loop runs on that stack before the
pipeline does:

1. **bare**: the models called in a loop in this process, one frame at a
   time: decode and sample (``ingest.source.sample_frames``) -> detect
   (``FaceDetector``) -> embed (``FaceEmbedder``) -> brute-force match
   (NumPy, against the enrolled vectors read back from Milvus). No JPEG, no
   Kafka, no S3, no Milvus. bare fps = frames / wall time of the loop (models
   loaded before), with torch's default threads (every core) unless
   ``models.torch_threads`` or ``--bare-threads`` says otherwise. One loop
   before each pipeline run (the machine is shared: the two tell how much
   the load moved); the mean is used.
2. **pipeline, throughput**: ``vigil.run.PipelineRun`` (every stage its own
   process over Kafka, S3 and Milvus), ingest not paced (it publishes as fast
   as it decodes). pipeline fps = frames / (T_end - T_start), where T_start
   is the ``produced_at`` of the run's first FrameEvent (ingest publishing
   it) and T_end is match's ``vigil_last_batch_done_timestamp_seconds``
   (the last embedding matched, outputs delivered). Process start-up and
   model loading happen before ingest starts and are excluded; the drain
   detection of the runner (polling) is excluded too.
3. **pipeline, latency**: the same, with ingest paced in real time
   (``VIGIL_INGEST__REALTIME=true``, so ``source_ts`` is the wall-clock
   capture time). Two measures:

   - **frame-to-alert** = alert ``produced_at`` - ``source_ts``: capture ->
     JPEG -> Kafka -> detect -> S3 evidence -> Kafka -> embed -> Kafka ->
     Milvus search -> track -> S3 copies -> alert produced. Match alerts once
     per (track, person), after ``match.min_track_faces`` faces, and the
     alert's ``source_ts`` is that of the track's best face, so this includes
     waiting for the track's evidence (at least one more frame). One alert per
     enrolled person's scene: few samples, so p99 is close to the maximum.
   - **face-to-match**: the age of every face when match has finished with it
     (match's ``vigil_event_age_seconds`` histogram; percentiles interpolated
     inside buckets, and the exact share within 1 s, which is a bucket bound),
     and the mean age when each stage is done, to show where the time goes.

Peak memory is each stage process's ``VmHWM`` (``/proc/PID/status``),
sampled by the runner until just before it stops the stages; the bare row is
this process's (which also holds the frames and enrolment).

``--stage-threads detect=1,embed=1`` sets ``models.torch_threads`` per stage
process; ``--env KEY=VALUE`` sets any setting for every stage process (e.g.
``VIGIL_DETECT__BATCH_WAIT_S=0.05``); ``--skip-latency`` /
``--skip-throughput`` run one half. The last line printed is
``ratio=<pipeline_fps/bare_fps> pipeline_fps=<x> bare_fps=<y> p99_ms=<z>``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import environ, machine, markdown_table, percentile_ms, print_machine, text_table

SOURCE_FPS = 10
SCENE_S = 2.0  # a new face every 2 s: each enrolled person's scene is a new track, hence a new alert


# --------------------------------------------------------------------------- footage and watchlist

@dataclass
class Workload:
    footage: Path
    n_source_frames: int
    watchlist: dict[str, list[Path]]  # person -> photos to enroll
    shown: list[str]  # scene labels, in order


def build_workload(folder: Path, *, seconds: float, size: tuple[int, int], enrolled_people: int = 6) -> Workload:
    """Footage of ``seconds`` at ``SOURCE_FPS`` and the watchlist to enroll (see the module doc)."""
    from synthetic.footage import Scene, identities, make_footage

    frames_per_scene = max(2, round(SCENE_S * SOURCE_FPS))
    n_scenes = max(1, round(seconds / SCENE_S))
    people = identities()
    candidates = sorted(p for p, photos in people.items() if len(photos) >= 3)[:enrolled_people]
    watchlist = {p: people[p][:2] for p in candidates}
    strangers = [people[p][0] for p in sorted(people) if p not in watchlist]
    known = [(photo, p) for p in candidates for photo in people[p][2:]]
    scenes = []
    for i in range(n_scenes):
        if i % 2 == 0 and known:
            photo, label = known[(i // 2) % len(known)]
        else:  # face-pairs has more people than can be enrolled: strangers is never empty
            photo, label = strangers[(i // 2) % len(strangers)], "stranger"
        scenes.append(Scene(photo, frames_per_scene, label))
    truth = make_footage(folder / "camera.mp4", scenes, fps=SOURCE_FPS, size=size, seed=0)
    return Workload(truth.path, truth.n_frames, watchlist, [s.label for s in scenes])


# --------------------------------------------------------------------------- bare loop

@dataclass
class BareResult:
    frames: int
    faces: int
    matched: int
    wall_s: float
    steps_s: dict[str, float]
    torch_threads: int
    cpu_s: float = 0.0  # this process's user + system CPU seconds over the loop

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0


def bare_loop(footage: Path, fps: float, *, detector, embedder, gallery: np.ndarray, gallery_ids: list[str],
              threshold: float, max_width: int | None) -> BareResult:
    """decode -> detect -> embed -> brute-force match, one frame at a time, in this process."""
    import torch

    from ingest.source import sample_frames

    steps = {"decode": 0.0, "detect": 0.0, "embed": 0.0, "match": 0.0}
    frames = faces = matched = 0
    cpu0 = _self_cpu_s()
    started = time.perf_counter()
    sampler = sample_frames(str(footage), fps, max_width=max_width)
    while True:
        t0 = time.perf_counter()
        frame = next(sampler, None)
        t1 = time.perf_counter()
        steps["decode"] += t1 - t0
        if frame is None:
            break
        frames += 1
        found = detector.detect([frame.image])[0]
        t2 = time.perf_counter()
        steps["detect"] += t2 - t1
        if not found:
            continue
        faces += len(found)
        vectors = embedder.embed([f.crop for f in found])
        t3 = time.perf_counter()
        steps["embed"] += t3 - t2
        if len(gallery):
            scores = vectors @ gallery.T
            best = scores.argmax(axis=1)
            matched += int(sum(scores[i, b] >= threshold for i, b in enumerate(best)))
        steps["match"] += time.perf_counter() - t3
    return BareResult(frames, faces, matched, time.perf_counter() - started, steps, torch.get_num_threads(),
                      _self_cpu_s() - cpu0)


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuSampler:
    """Samples ``group_cpu_s`` every ``interval_s`` in a thread, to read the CPU used between two wall-clock times."""

    def __init__(self, pgids: list[int], interval_s: float = 0.25):
        import threading

        self.pgids, self.interval_s = pgids, interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), group_cpu_s(self.pgids)))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, t0: float, t1: float) -> float:
        if len(self.samples) < 2:
            return float("nan")
        times, values = zip(*self.samples)
        return float(np.interp(t1, times, values) - np.interp(t0, times, values))


def group_cpu_s(pgids: list[int]) -> float:
    """CPU seconds (user + system) of every live process in these process groups (the stack's servers)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_path.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) in pgids:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def read_gallery(watchlist) -> tuple[np.ndarray, list[str]]:
    rows = watchlist.client.query(watchlist.collection, filter="id >= 0", output_fields=["person_id", "embedding"],
                                  limit=16384, consistency_level="Strong")
    if not rows:
        return np.zeros((0, 512), np.float32), []
    return np.asarray([r["embedding"] for r in rows], dtype=np.float32), [r["person_id"] for r in rows]


# --------------------------------------------------------------------------- pipeline runs

@dataclass
class PipelineResult:
    mode: str
    frames: int
    faces: float
    embeddings: float
    alerts: int
    t_start: float | None  # Unix seconds: first frame published
    t_end: float | None  # Unix seconds: match finished its last batch
    runner_wall_s: float
    busy_s: dict[str, float]
    batches: dict[str, float]
    mean_age_s: dict[str, float]
    age_hist_p: dict[str, float]  # match's event age percentiles from its histogram (bucket-interpolated)
    within_1s: float | None  # fraction of faces matched within 1 s of capture (exact: the histogram has a 1 s bucket)
    latencies_s: list[float] = field(default_factory=list)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # per stage process from ready to the end, and "services"
    handled: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage -> (events in, produced upstream)

    @property
    def wall_s(self) -> float | None:
        return (self.t_end - self.t_start) if self.t_start and self.t_end else None

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0


def first_frame_time(kafka_settings, run_id: str) -> tuple[float | None, int]:
    from runtime.kafka import EventReader
    from schemas.topics import FRAMES

    first, count = None, 0
    with EventReader(kafka_settings, FRAMES) as reader:
        for read in reader.follow(idle_timeout_s=2):
            event = read.event
            if event is not None and event.run_id == run_id:
                count += 1
                ts = event.produced_at.timestamp()
                first = ts if first is None else min(first, ts)
    return first, count


def run_pipeline(settings, footage: Path, home: Path, *, fps: float, realtime: bool, env: dict[str, str],
                 stage_env: dict[str, dict[str, str]], out, service_pgids: list[int] = ()) -> PipelineResult:
    from runtime import metrics
    from runtime.metrics import Scrape
    from accountability.actors import Actor
    from accountability.audit import AuditLog
    from schemas.stages import PIPELINE_STREAM_STAGES
    from vigil.run import PipelineRun, handled, produced, run_deployment

    overrides = {"VIGIL_INGEST__TARGET_FPS": str(fps), "VIGIL_INGEST__REALTIME": "true" if realtime else "false", **env}
    with environ(overrides):
        run = PipelineRun(settings, [f"cam-1={footage}"], home=home, out=out, stage_env=stage_env)
        bench = Actor("bench", "cli", frozenset({"authoriser"}))
        with AuditLog(settings) as audit, run_deployment(settings, bench, run, case="bench", reason="pipeline benchmark",
                                                         persons=None, audit=audit):
            with CpuSampler(list(service_pgids)) as services:
                summary = run.execute()
    t_start, published = first_frame_time(settings.kafka, run.run_id)
    final = {s.name: summary.metrics.get(s.name) or Scrape() for s in PIPELINE_STREAM_STAGES}
    match = final["match"]
    t_end = match.get(metrics.LAST_BATCH_DONE) or None
    busy = {name: scrape.get(metrics.PROCESS_SECONDS, "sum") for name, scrape in final.items()}
    batches = {name: scrape.get(metrics.BATCH_SIZE, "sum") / max(1.0, scrape.get(metrics.BATCH_SIZE, "count"))
               for name, scrape in final.items()}
    mean_age = {}
    for name, scrape in final.items():
        n = scrape.get(metrics.LAG_SECONDS, "count")
        mean_age[name] = scrape.get(metrics.LAG_SECONDS, "sum") / n if n else float("nan")
    hist_p = {f"p{int(q * 100)}": match.quantile(metrics.LAG_SECONDS, q) for q in (0.5, 0.99)}
    age_count = match.get(metrics.LAG_SECONDS, "count")
    within_1s = match.get(metrics.LAG_SECONDS, "bucket", le="1.0") / age_count if age_count else None
    latencies = [(a.produced_at - a.source_ts).total_seconds() for a in summary.alerts]
    services_cpu = services.between(t_start, t_end) if t_start and t_end else float("nan")
    return PipelineResult(
        mode="latency (ingest paced at real time)" if realtime else "throughput (ingest unpaced)",
        frames=int(summary.counts.get("frames", published)), faces=summary.counts.get("faces", 0),
        embeddings=summary.counts.get("embeddings", 0), alerts=len(summary.alerts), t_start=t_start, t_end=t_end,
        runner_wall_s=summary.wall_s, busy_s=busy, batches=batches, mean_age_s=mean_age, age_hist_p=hist_p, within_1s=within_1s,
        latencies_s=latencies, peak_rss_mb=summary.peak_rss_mb, cpu_s={**summary.cpu_s, "services": services_cpu},
        handled={s.name: (handled(final, s), produced(final, s, float(published))) for s in PIPELINE_STREAM_STAGES},
    )


# --------------------------------------------------------------------------- the bench

@dataclass
class BenchResult:
    bare: list[BareResult]
    throughput: PipelineResult | None
    latency: PipelineResult | None
    bare_rss_mb: float
    enrolled: dict[str, int]

    @property
    def bare_fps(self) -> float:
        return float(np.mean([b.fps for b in self.bare])) if self.bare else 0.0

    @property
    def pipeline_fps(self) -> float:
        return self.throughput.fps if self.throughput else 0.0

    @property
    def ratio(self) -> float:
        return self.pipeline_fps / self.bare_fps if self.bare_fps else 0.0

    @property
    def p99_ms(self) -> float:
        if self.latency and self.latency.latencies_s:
            return percentile_ms(self.latency.latencies_s, 99)
        p99 = self.latency.age_hist_p.get("p99") if self.latency else None  # no alert: the faces' p99
        return p99 * 1000 if p99 is not None else float("nan")


@dataclass
class StackHandle:
    """A running stack for one pipeline run: its settings and its servers' process groups."""

    settings: object
    home: Path
    service_pgids: list[int]


def fresh_stacks(root: Path):
    """A factory of fresh local stacks, one per pipeline run (``root/home-N``), each stopped after its run.

    A fresh broker per run: a stage's consumer group may not have committed its
    last batch when the runner stopped it, and the next run's stage would then
    replay those events (at-least-once) into this run's timings.
    """
    from runtime.settings import load_settings
    from localstack.stack import running_stack

    count = 0

    @contextlib.contextmanager
    def factory():
        nonlocal count
        count += 1
        home = root / f"home-{count}"
        with running_stack(home) as stack:
            os.environ["VIGIL_CONFIG"] = stack["config"]
            yield StackHandle(load_settings(), home, [s["pid"] for s in stack["services"].values() if s.get("pid")])

    return factory


def enroll(settings, workload: Workload, detector, embedder) -> dict[str, int]:
    from datetime import datetime, timedelta, timezone

    from accountability.actors import Actor
    from vigil.enroll import Enroller

    enroller = Enroller(settings, detector=detector, embedder=embedder)
    enrolled = {}
    bench = Actor("bench", "cli", frozenset({"enroller"}))
    try:
        for person, photos in workload.watchlist.items():
            enrolled[person] = len(enroller.enroll(person, photos, actor=bench, reason="pipeline benchmark",
                                                   expires_at=datetime.now(timezone.utc) + timedelta(days=1)).enrolled)
    finally:
        enroller.close()
    return enrolled


def run_bench(workload: Workload, stacks, *, fps: float, bare_threads: int | None, throughput: bool = True,
              latency: bool = True, bare_runs: int = 2, env: dict[str, str] | None = None,
              stage_env: dict[str, dict[str, str]] | None = None, out=None, log=print) -> BenchResult:
    """Per pipeline run, on a stack from ``stacks()`` (a context manager yielding a ``StackHandle``): enrol,
    a bare loop, then the pipeline run; bare loops left over run after (see the module doc)."""
    from detect.model import FaceDetector
    from embed.model import FaceEmbedder
    from runtime.device import apply_torch_threads, pick_device
    from runtime.settings import load_settings
    from storage.vectors import Watchlist

    out = out or open(os.devnull, "w")  # noqa: SIM115 - the runner's progress lines
    env, stage_env = env or {}, stage_env or {}
    import torch

    base = load_settings()
    device = pick_device(base.models.device)
    bare_threads = bare_threads or base.models.torch_threads or torch.get_num_threads()  # torch's default: every core
    detector = FaceDetector(base.detect, device)
    embedder = FaceEmbedder(base.models.weights_dir, device)
    bares: list[BareResult] = []
    enrolled: dict[str, int] = {}
    runs: dict[bool, PipelineResult] = {}
    modes = [realtime for realtime, wanted in ((False, throughput), (True, latency)) if wanted]
    for i, realtime in enumerate(modes or [None]):
        with stacks() as stack:
            settings = stack.settings
            enrolled = enroll(settings, workload, detector, embedder)
            with Watchlist(settings.milvus) as watchlist:
                gallery, gallery_ids = read_gallery(watchlist)
            log(f"stack {stack.home.name}: enrolled {sum(enrolled.values())} photos of {len(enrolled)} people")
            n_bare = bare_runs - len(bares) if i == len(modes) - 1 else (1 if len(bares) < bare_runs else 0)
            for _ in range(max(0, n_bare)):
                apply_torch_threads(bare_threads)  # enrolment applies the settings' count
                result = bare_loop(workload.footage, fps, detector=detector, embedder=embedder, gallery=gallery,
                                   gallery_ids=gallery_ids, threshold=settings.match.threshold, max_width=settings.ingest.max_width)
                log(f"bare: {result.frames} frames, {result.faces} faces in {result.wall_s:.1f} s = {result.fps:.2f} fps "
                    f"(load avg {machine()['load_avg']})")
                bares.append(result)
            if realtime is None:
                break
            r = run_pipeline(settings, workload.footage, stack.home, fps=fps, realtime=realtime, env=env,
                             stage_env=stage_env, out=out, service_pgids=stack.service_pgids)
            runs[realtime] = r
            if realtime:
                log(f"pipeline latency: {len(r.latencies_s)} alerts, p50 {percentile_ms(r.latencies_s, 50):.0f} ms "
                    f"p99 {percentile_ms(r.latencies_s, 99):.0f} ms; faces within 1 s: "
                    f"{_f(r.within_1s and r.within_1s * 100, '.1f')}% (load avg {machine()['load_avg']}); "
                    f"ms per alert as they came: {[round(x * 1000) for x in r.latencies_s]}")
            else:
                log(f"pipeline throughput: {r.frames} frames in {r.wall_s or 0:.1f} s = {r.fps:.2f} fps "
                    f"(load avg {machine()['load_avg']})")
            for stage, (handled, upstream) in r.handled.items():
                if handled != upstream:
                    log(f"  warning: {stage} handled {handled:.0f} events for {upstream:.0f} produced upstream in this run")
    bare_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return BenchResult(bares, runs.get(False), runs.get(True), bare_rss, enrolled)


def _f(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def report_tables(result: BenchResult, fmt=text_table) -> str:
    parts = []
    rows = []
    for i, b in enumerate(result.bare):
        steps = ", ".join(f"{k} {v / max(1, b.frames) * 1000:.0f}" for k, v in b.steps_s.items())
        rows.append([f"bare loop, run {i + 1} ({b.torch_threads} torch threads)", str(b.frames), str(b.faces), _f(b.wall_s, ".1f"),
                     _f(b.fps), _f(b.cpu_s / max(1, b.frames) * 1000, ".0f"), f"wall ms/frame: {steps}"])
    for p in (result.throughput, result.latency):
        if p is None:
            continue
        busy = ", ".join(f"{s} {p.busy_s[s] / max(1, p.frames) * 1000:.0f}" for s in p.busy_s)
        cpu = sum(v for v in p.cpu_s.values() if v == v)
        rows.append([f"pipeline, {p.mode}", str(p.frames), str(int(p.faces)), _f(p.wall_s, ".1f"), _f(p.fps),
                     _f(cpu / max(1, p.frames) * 1000, ".0f"), f"busy ms/frame: {busy}"])
    parts.append(fmt(["run", "frames", "faces", "wall s", "fps", "CPU ms/frame", "where the time goes"], rows))

    if result.throughput:
        p = result.throughput
        per_frame = lambda v: _f(v / max(1, p.frames) * 1000 if v is not None else None, ".0f")  # noqa: E731
        rows = [[s, _f(p.busy_s[s], ".1f"), _f(p.busy_s[s] / p.wall_s * 100 if p.wall_s else None, ".0f"),
                 _f(p.batches[s], ".1f"), per_frame(p.cpu_s.get(s)), _f(p.peak_rss_mb.get(s), ".0f")] for s in p.busy_s]
        rows.append(["ingest", "-", "-", "-", per_frame(p.cpu_s.get("ingest")), _f(p.peak_rss_mb.get("ingest"), ".0f")])
        rows.append(["services (Kafka, S3, Milvus)", "-", "-", "-", per_frame(p.cpu_s.get("services")), "-"])
        b = result.bare[0] if result.bare else None
        rows.append(["bare loop (this process)", "-", "-", "1", _f(b and b.cpu_s / max(1, b.frames) * 1000, ".0f"),
                     _f(result.bare_rss_mb, ".0f")])
        parts.append(fmt(["process (throughput run)", "busy s", "busy % of wall", "mean batch", "CPU ms/frame", "peak RSS MB"], rows))

    if result.latency:
        p = result.latency
        lat = p.latencies_s
        rows = [["frame-to-alert (alert produced_at - source_ts)", str(len(lat)), _f(percentile_ms(lat, 50), ".0f"),
                 _f(percentile_ms(lat, 99), ".0f"), f"max {_f(max(lat) * 1000 if lat else None, '.0f')} ms"]]
        rows.append(["face-to-match (match's event age histogram, every face)", str(int(p.embeddings)),
                     _f(p.age_hist_p["p50"] and p.age_hist_p["p50"] * 1000, ".0f"),
                     _f(p.age_hist_p["p99"] and p.age_hist_p["p99"] * 1000, ".0f"),
                     f"{_f(p.within_1s and p.within_1s * 100, '.1f')}% within 1 s"])
        ages = ", ".join(f"{s} {_f(age * 1000, '.0f')}" for s, age in p.mean_age_s.items())
        rows.append(["mean event age (ms) when each stage is done", "-", "-", "-", ages])
        parts.append(fmt(["latency (ingest paced, 1 camera)", "n", "p50 ms", "p99 ms", "note"], rows))
    return "\n\n".join(parts)


def _parse_kv(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="length of the footage (default 40)")
    parser.add_argument("--fps", type=float, default=5.0, help="frames sampled per second by ingest (default 5)")
    parser.add_argument("--size", default="960x540", help="footage frame size (default 960x540)")
    parser.add_argument("--bare-threads", type=int, default=None,
                        help="torch threads of the bare loop (default: models.torch_threads, else torch's default, every core)")
    parser.add_argument("--stage-threads", default="",
                        help="torch threads per stage process, e.g. detect=2,embed=1 (default: models.torch_threads, "
                             "else vigil run's share: usable cores / 2 for detect and embed each)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for every stage process (repeatable)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--bare-runs", type=int, default=2, help="bare loops: before and after the throughput run (default 2)")
    parser.add_argument("--verbose", action="store_true", help="show the runner's progress lines")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    stage_env = {name: {"VIGIL_MODELS__TORCH_THREADS": threads}
                 for name, threads in _parse_kv([s for s in args.stage_threads.split(",") if s]).items()}
    env = _parse_kv(args.env)

    from vigil.run import MODEL_STAGES, THREADS_ENV, model_stage_threads

    info = machine()
    print_machine(info, f"fps {args.fps:g}  footage {args.size} {args.seconds:g} s")
    threads = {s: stage_env.get(s, {}).get(THREADS_ENV) or os.environ.get(THREADS_ENV) or str(model_stage_threads())
               for s in MODEL_STAGES}
    print("stage torch threads: " + ", ".join(f"{s}={t}" for s, t in threads.items()) + (f"  stage env: {env}" if env else ""))
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="vigil-bench-pipeline-") as tmp:
        t0 = time.perf_counter()
        workload = build_workload(Path(tmp), seconds=args.seconds, size=size)
        log(f"footage: {workload.n_source_frames} frames at {SOURCE_FPS} fps from face-pairs "
            f"in {time.perf_counter() - t0:.1f} s; scenes {workload.shown}")
        result = run_bench(workload, fresh_stacks(Path(tmp)), fps=args.fps, bare_threads=args.bare_threads,
                           throughput=not args.skip_throughput, latency=not args.skip_latency,
                           bare_runs=args.bare_runs, env=env, stage_env=stage_env,
                           out=sys.stderr if args.verbose else None, log=log)
    print()
    print(report_tables(result))
    if args.markdown:
        print()
        print(report_tables(result, markdown_table))
    print(f"\nload avg at the end {machine()['load_avg']}")
    print(f"ratio={result.ratio:.3f} pipeline_fps={result.pipeline_fps:.2f} bare_fps={result.bare_fps:.2f} p99_ms={result.p99_ms:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
