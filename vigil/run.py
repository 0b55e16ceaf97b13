"""``vigil run``: the whole pipeline on a set of sources, every stage in its own process.

The runner is an operator, not a stage: it starts the stage processes
(``vigil stage NAME``) and supervises them as Kubernetes would (a stage that
exits is restarted after a growing delay, up to ``max_restarts`` exits in a
row, then the run fails naming the stage), follows the alerts topic as a
downstream consumer would, and writes the report. It knows the pipeline has
drained from the consumer groups' committed offsets against the topics' ends,
which survive a stage's restart (the stages' own counters start again at 0).

A run is an authorised use like any other: ``run_deployment`` starts a
deployment bound to the run (its cameras, the reason it was given, its
watchlist), which the stages require before they process a frame, and ends
it when the run ends, expiring the entries enrolled for the run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from accountability.actors import Actor
from accountability.audit import AuditLog
from accountability.deployments import DeploymentRequest, Deployments, run_window
from accountability.watchlist import expire_entries
from ingest.service import CAMERAS_FAILED_EXIT, camera_from_source
from runtime import metrics
from runtime.kafka import ConsumerLag, EventReader, ensure_topics
from runtime.metrics import Scrape
from runtime.settings import VigilSettings
from schemas.events import AlertEvent, DeploymentEvent, MatchStateEvent, utc_now
from schemas.stages import ALL_STAGES, INGEST, PIPELINE_STREAM_STAGES, STREAM_STAGES, StageSpec, producer_of
from schemas.topics import ALERTS, MATCH_STATE
from storage.objects import ObjectStore
from storage.vectors import Watchlist

MODEL_STAGES = tuple(s.name for s in ALL_STAGES if s.uses_models)  # they share this host's cores
THREADS_ENV = "VIGIL_MODELS__TORCH_THREADS"


def model_stage_threads() -> int:
    """torch threads per model stage when every stage runs on this host: the usable cores shared out.

    torch's default (every core, in each process) has detect and embed fight over the
    same cores: on 2 cores, 2 threads each cost 570 CPU ms per frame against 200 ms
    with 1 each, and cut the pipeline from 6-9 to 2 frames/s (bench/pipeline.py).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // len(MODEL_STAGES))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class StageProcess:
    name: str  # the instance: the stage's name, or "match-2" for a second instance
    port: int
    process: subprocess.Popen
    log_path: Path
    stage: str = ""  # the stage (schemas.stages) it runs; defaults to name
    env: dict[str, str] = field(default_factory=dict, repr=False)  # what it was started with, for a restart
    peak_rss_kb: int = 0  # VmHWM, sampled while the process runs (see sample)
    cpu_s: float = 0.0  # user + system CPU seconds at the last sample
    cpu_at_ready_s: float = 0.0  # ... when the stages were ready (model loading is before)

    def __post_init__(self):
        self.stage = self.stage or self.name

    def sample(self) -> None:
        """Keep the process's peak resident set size (``VmHWM``) and CPU time; a no-op once it has exited or without procfs."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            self.cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, ValueError, IndexError):
            pass

    def scrape(self) -> Scrape:
        return Scrape.fetch(f"http://127.0.0.1:{self.port}/metrics")

    def ready(self) -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def handled(scrapes: dict[str, Scrape], stage: StageSpec) -> float:
    """Input events ``stage`` has finished with (outputs delivered or dead-lettered)."""
    return scrapes[stage.name].get(metrics.EVENTS_IN, topic=stage.source.name)


def produced(scrapes: dict[str, Scrape], stage: StageSpec, published: float) -> float:
    """Events written to ``stage``'s input topic by the stage upstream (``published``: frames, for ingest)."""
    upstream = producer_of(stage.source)
    return published if upstream is INGEST else scrapes[upstream.name].get(metrics.EVENTS_OUT, topic=stage.source.name)


def drained(scrapes: dict[str, Scrape], published: float) -> bool:
    """Every stream stage of the pipeline has finished with every event its upstream produced."""
    return all(handled(scrapes, s) >= produced(scrapes, s, published) for s in PIPELINE_STREAM_STAGES)


@dataclass
class RunSummary:
    run_id: str
    sources: list[str]
    alerts: list[AlertEvent] = field(default_factory=list)
    counts: dict[str, float] = field(default_factory=dict)
    fps: dict[str, float] = field(default_factory=dict)
    camera_errors: dict[str, list[str]] = field(default_factory=dict)
    alert_copies: int = 0  # every alert message of the run, redelivered copies (same alert_id) included
    restarts: dict[str, int] = field(default_factory=dict)  # per stage instance, by the supervisor
    wall_s: float = 0.0
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # per stage process, VmHWM
    cpu_s: dict[str, float] = field(default_factory=dict)  # per stage process, CPU seconds from ready to the end
    metrics: dict[str, Scrape] = field(default_factory=dict)  # each stage's last /metrics scrape


class PipelineRun:
    # Restart delays after a stage exits, as Kubernetes' CrashLoopBackOff (shorter: runs are minutes long).
    RESTART_DELAY_S = (0.5, 1.0, 2.0, 4.0, 8.0)

    def __init__(self, settings: VigilSettings, sources: list[str], *, home: Path, out=sys.stdout,
                 stage_env: dict[str, dict[str, str]] | None = None, run_id: str | None = None, max_restarts: int = 5):
        self.settings = settings
        self.stage_env = stage_env or {}  # extra environment per stage process, e.g. {"detect": {"VIGIL_MODELS__TORCH_THREADS": "1"}}
        self.sources = sources
        self.home = home
        self.run_id = run_id or f"run-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        # The source-time origin of the run's file frames: a restarted ingest re-sends the same frames, same ids and times.
        self.started_at = utc_now()
        self.max_restarts = max_restarts
        self.out = out
        self.stages: dict[str, StageProcess] = {}  # instance name -> its current process
        self.restarts: dict[str, int] = defaultdict(int)  # instance name -> restarts so far
        self.ready = threading.Event()  # set once the stages are ready and ingest starts
        self._in_a_row: dict[str, int] = defaultdict(int)  # exits since the instance was last ready
        self._restart_at: dict[str, float] = {}  # instance name -> when to start it again
        self._past_scrapes: dict[str, list[Scrape]] = defaultdict(list)  # stage -> last scrapes of its exited processes
        self._last_scrape: dict[str, Scrape] = {}  # instance name -> its current process's last scrape
        self._finished: set[str] = set()  # instances that ended for good (ingest, done)
        self._lag_error = ""  # the last reason the consumer lag could not be read, said once
        # Ends the run's authorised use once the pipeline has drained (run_deployment sets it): match then ends the
        # run's open tracks, publishes their ends and forgets their passers-by before the stages stop.
        self.end_use: Callable[[], None] | None = None
        self.cameras = [camera_from_source(s) for s in sources]

    def _spawn(self, stage: str, extra_env: dict[str, str] | None = None, *, instance: str | None = None) -> StageProcess:
        name = instance or stage
        port = free_port()
        log_dir = self.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        log_path = log_dir / f"{self.run_id}-{name}.log"
        env = {**os.environ, **self.stage_env.get(stage, {}), **(extra_env or {}),
               "VIGIL_STAGE__HEALTH_PORT": str(port), "VIGIL_STAGE__LOG_FORMAT": "json"}
        if stage in MODEL_STAGES and THREADS_ENV not in env and self.settings.models.torch_threads is None:
            env[THREADS_ENV] = str(model_stage_threads())
        # Owner-only (stage logs name cameras, persons and runs); a restart appends: the log keeps why the last one ended.
        with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log_file:
            process = subprocess.Popen([sys.executable, "-m", "vigil.cli", "stage", stage], env=env, stdout=log_file, stderr=subprocess.STDOUT)
        started = StageProcess(name, port, process, log_path, stage=stage, env=env)
        self.stages[name] = started
        return started

    def add_instance(self, stage: str) -> StageProcess:
        """Start one more process of ``stage`` (a new member of its consumer group, as a scale-up would), supervised too."""
        n = 1 + sum(1 for p in self.stages.values() if p.stage == stage)
        return self._spawn(stage, instance=f"{stage}-{n}")

    def retire(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop instance ``name`` for good (a scale-down, or with SIGKILL a lost node): it is not restarted, and the
        other members of its consumer group take its partitions over."""
        self._finished.add(name)
        self.stages[name].process.send_signal(sig)

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def execute(self, *, ready_timeout_s: float = 300, drain_timeout_s: float = 3600) -> RunSummary:
        started = time.monotonic()
        ensure_topics(self.settings.kafka)
        cameras = self.cameras
        summary = RunSummary(self.run_id, self.sources)
        try:
            for stage in STREAM_STAGES:
                self._spawn(stage.name)
            self._wait_ready(ready_timeout_s)
            for stage in self.stages.values():
                stage.sample()
                stage.cpu_at_ready_s = stage.cpu_s
            self._say(f"run {self.run_id}: stages ready; ingesting {len(cameras)} source(s)")
            self.ingest_report = self.home / "logs" / f"{self.run_id}-ingest.json"
            self._spawn(INGEST.name, {
                "VIGIL_INGEST__CAMERAS": json.dumps([c.model_dump(mode="json") for c in cameras]),
                "VIGIL_INGEST__RUN_ID": self.run_id,
                "VIGIL_INGEST__RUN_STARTED_AT": self.started_at.isoformat(),
                "VIGIL_INGEST__REPORT_PATH": str(self.ingest_report),
            })
            self.ready.set()
            groups = {s.consumer_group: s.source.name for s in PIPELINE_STREAM_STAGES}
            with EventReader(self.settings.kafka, ALERTS) as alerts, ConsumerLag(self.settings.kafka, groups) as lag:
                self._follow(alerts, lag, summary, drain_timeout_s)
            if self.end_use is not None:
                self.end_use()
                self._wait_tracks_ended()
            summary.camera_errors = {c: r["errors"] for c, r in self._ingest_result().items() if r["errors"]}
        finally:
            for stage in self.stages.values():
                stage.sample()
            self._scrape_all()
            self._stop_all()
        summary.peak_rss_mb = {name: stage.peak_rss_kb / 1024 for name, stage in self.stages.items()}
        summary.cpu_s = {name: stage.cpu_s - stage.cpu_at_ready_s for name, stage in self.stages.items()}
        summary.metrics = dict(self._last_scrape)
        summary.counts, summary.fps = self._totals()
        summary.counts["alerts"] = len(summary.alerts)
        summary.restarts = {name: n for name, n in self.restarts.items() if n}
        summary.wall_s = time.monotonic() - started
        return summary

    def _wait_ready(self, timeout_s: float) -> None:
        """Until every stage is ready; one that exits meanwhile is restarted as it would be later (a permanent
        error, such as a wrong secret, ends the run after ``max_restarts`` exits in a row, naming the stage and why)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._supervise()
            waiting = [name for name, stage in self.stages.items() if stage.process.poll() is not None or not stage.ready()]
            if not waiting:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {name}:\n{self.stages[name].log_tail(5)}" for name in waiting)
                raise RuntimeError(f"stages not ready after {timeout_s:.0f}s: {waiting}\n{tails}")
            time.sleep(0.5)

    def _follow(self, alerts: EventReader, lag: ConsumerLag, summary: RunSummary, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_line, drained_since, published = "", None, 0.0
        seen: set[str] = set()
        while time.monotonic() < deadline:
            self._collect_alerts(alerts, summary, seen, timeout_s=0.5)
            self._supervise()
            self._scrape_all()
            ingest_done = INGEST.name in self._finished
            if ingest_done:
                published = float(sum(r["frames"] for r in self._ingest_result().values()))
            elif INGEST.name in self._last_scrape:  # never count backwards (a restarted ingest starts at 0)
                published = max(published, self._last_scrape[INGEST.name].get(metrics.EVENTS_OUT, topic=INGEST.outputs[0].name))
            behind = self._behind(lag)
            line = self._progress(published, behind, len(seen))
            if line != last_line:
                self._say(line)
                last_line = line
            if ingest_done and behind is not None and not any(behind.values()):
                drained_since = drained_since or time.monotonic()
                if time.monotonic() - drained_since > 1.5:  # the last alerts are in flight
                    self._collect_alerts(alerts, summary, seen, timeout_s=1.0)
                    self.published = published
                    return
            else:
                drained_since = None
        raise TimeoutError(f"pipeline did not drain within {timeout_s:.0f}s")

    def _wait_tracks_ended(self, timeout_s: float = 30.0) -> None:
        """Until match's changelog holds no open track of this run (it ends them once the run's deployment has ended).

        One reader follows the changelog: each round reads only what was written since the last."""
        open_tracks: dict[str, int] = {}  # camera -> open tracks in its latest state record of this run
        deadline = time.monotonic() + timeout_s
        with EventReader(self.settings.kafka, MATCH_STATE) as reader:
            while True:
                for read in reader.read_to_end():
                    state = read.event
                    if isinstance(state, MatchStateEvent) and state.run_id == self.run_id:
                        open_tracks[state.camera_id] = len(state.tracks)
                still_open = sum(open_tracks.values())
                if not still_open:
                    return
                if time.monotonic() > deadline:
                    self._say(f"  {still_open} track(s) of the run still open after {timeout_s:.0f}s; stopping anyway")
                    return
                self._supervise()
                time.sleep(0.5)

    def _behind(self, lag: ConsumerLag) -> dict[str, int] | None:
        """Each pipeline stage's uncommitted input events (None while the broker does not answer). A stage commits only
        after delivering its outputs, so every stage at 0 in consecutive rounds (the runner waits 1.5 s) is drained."""
        try:
            behind = lag.lag()
            return {s.name: behind[s.consumer_group] for s in PIPELINE_STREAM_STAGES}
        except Exception as exc:  # noqa: BLE001 - the broker may be away (a fault): ask again next round
            if repr(exc) != self._lag_error:
                self._lag_error = repr(exc)
                self._say(f"  consumer lag unavailable: {exc!r}")
            return None

    def _supervise(self) -> None:
        """Restart stage processes that exited, as a Deployment's pods would be; ingest only when it failed."""
        now = time.monotonic()
        for name, stage in list(self.stages.items()):
            if name in self._finished:
                continue
            code = stage.process.poll()
            if code is None:
                if self._in_a_row[name] and name not in self._restart_at and stage.ready():
                    self._in_a_row[name] = 0  # up and ready again: the next exit starts a new count
                continue
            if name in self._restart_at:
                if now >= self._restart_at[name]:
                    del self._restart_at[name]
                    self.restarts[name] += 1
                    self._past_scrapes[stage.stage].append(self._last_scrape.pop(name, Scrape()))
                    extra = {k: v for k, v in stage.env.items() if os.environ.get(k) != v}
                    self._spawn(stage.stage, extra, instance=name)
                continue
            if stage.stage == INGEST.name and code in (0, CAMERAS_FAILED_EXIT):  # done (failed cameras are in its report)
                self._finished.add(name)
                continue
            self._in_a_row[name] += 1
            if self._in_a_row[name] > self.max_restarts:
                raise RuntimeError(f"stage {name} exited with {code} {self._in_a_row[name]} times in a row; giving up:\n"
                                   f"{stage.log_tail()}")
            delay = self.RESTART_DELAY_S[min(self._in_a_row[name], len(self.RESTART_DELAY_S)) - 1]
            last = stage.log_tail(1).strip()
            self._say(f"  stage {name} exited with {code} ({last[:300]}); restarting it in {delay:.1f}s "
                      f"({self._in_a_row[name]}/{self.max_restarts} in a row)")
            self._restart_at[name] = now + delay

    def _scrape_all(self) -> None:
        for name, stage in self.stages.items():
            stage.sample()
            if stage.process.poll() is None:
                try:
                    self._last_scrape[name] = stage.scrape()
                except OSError:
                    pass  # starting, stopping or stalled: keep the last one

    def _collect_alerts(self, alerts: EventReader, summary: RunSummary, seen: set[str], timeout_s: float) -> None:
        for read in alerts.read(timeout_s=timeout_s):
            event = read.event
            if not isinstance(event, AlertEvent) or event.run_id != self.run_id:
                continue
            summary.alert_copies += 1
            if event.alert_id not in seen:
                seen.add(event.alert_id)
                summary.alerts.append(event)
                self._say(f"  ALERT {event.person_id} on camera {event.camera_id} at {event.source_ts:%H:%M:%S} score={event.score:.3f}")

    def _ingest_result(self) -> dict[str, dict]:
        try:
            return json.loads(self.ingest_report.read_text())
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"ingest ended without its report:\n{self.stages['ingest'].log_tail()}") from exc

    @staticmethod
    def _progress(published: float, behind: dict[str, int] | None, alerts: int) -> str:
        parts = [f"{int(published)} frames published"]
        for stage in PIPELINE_STREAM_STAGES:
            parts.append(f"{stage.name} behind {'?' if behind is None else behind[stage.name]}")
        return "  " + " | ".join(parts + [f"{alerts} alert(s)"])

    def _totals(self) -> tuple[dict[str, float], dict[str, float]]:
        """Counts over every process each stage had (a restarted stage's counters start again at 0)."""
        per_stage: dict[str, list[Scrape]] = defaultdict(list)
        for name, scrape in self._last_scrape.items():
            per_stage[self.stages[name].stage].append(scrape)
        for stage, scrapes in self._past_scrapes.items():
            per_stage[stage] += scrapes

        def total(stage: str, *args, **labels) -> float:
            return sum(scrape.get(*args, **labels) for scrape in per_stage.get(stage, ()))

        counts = {"frames": getattr(self, "published", 0.0)}
        for stage in PIPELINE_STREAM_STAGES:
            for topic in stage.outputs:
                counts[topic.label] = total(stage.name, metrics.EVENTS_OUT, topic=topic.name)
        counts["dead_letters"] = sum(total(s.name, metrics.DEAD_LETTERS) for s in PIPELINE_STREAM_STAGES)
        fps = {}
        for stage in PIPELINE_STREAM_STAGES:
            busy = total(stage.name, metrics.PROCESS_SECONDS, "sum")
            fps[stage.name] = total(stage.name, metrics.EVENTS_IN, topic=stage.source.name) / busy if busy else 0.0
        return counts, fps

    def _stop_all(self) -> None:
        for stage in self.stages.values():
            if stage.process.poll() is None:
                stage.process.send_signal(signal.SIGTERM)
        for stage in self.stages.values():
            try:
                stage.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                stage.process.kill()


@dataclass
class RunUse:
    """The deployment of one run, and the watchlist entries enrolled for it (they expire when it ends)."""

    deployment: DeploymentEvent
    entry_ids: list[int] = field(default_factory=list)


@contextmanager
def run_deployment(settings: VigilSettings, actor: Actor, run: PipelineRun, *, case: str, reason: str,
                   persons: list[str] | None, audit: AuditLog) -> Iterator[RunUse]:
    """A deployment bound to ``run`` for the block: its cameras, ``reason`` as its purpose, ``persons`` as its
    watchlist (None: every entry in force). The deployment ends once the run has drained (match then ends the run's
    tracks) or when the block ends, whichever comes first; then the entries the block put in ``entry_ids`` expire
    (audited)."""
    with Deployments(settings, audit=audit) as deployments:
        starts = min(utc_now(), run.started_at)  # the run's recordings are stamped from run.started_at on
        deployment = deployments.start(actor, DeploymentRequest(
            case=case, purpose=reason, cameras=[c.id for c in run.cameras], starts_at=starts, ends_at=starts + run_window(settings),
            persons=persons, run_ids=(run.run_id,)))
        use = RunUse(deployment)
        ended = []

        def end_use() -> None:
            if not ended:
                deployments.end(actor, deployment.deployment_id, f"run {run.run_id} ended")
                ended.append(True)

        run.end_use = end_use
        try:
            yield use
        finally:
            end_use()
            if use.entry_ids:
                with Watchlist(settings.milvus) as watchlist:
                    ids = set(use.entry_ids)
                    entries = [e for e in watchlist.entries() if e.id in ids]
                    expire_entries(settings, actor, entries, f"enrolled for run {run.run_id}, whose deployment ended",
                                   audit=audit, watchlist=watchlist, store=ObjectStore(settings.s3))


def describe_deployment(deployment: DeploymentEvent) -> str:
    persons = ", ".join(deployment.persons) if deployment.persons is not None else "every watchlist entry in force"
    return (f"deployment {deployment.deployment_id} ({deployment.kind}) case {deployment.case!r}, authorised by "
            f"{deployment.authorised_by} for {deployment.purpose!r}: cameras {', '.join(deployment.cameras)}, "
            f"{deployment.starts_at:%Y-%m-%d %H:%M:%S} to {deployment.ends_at:%Y-%m-%d %H:%M:%S} UTC, watchlist: {persons}")

