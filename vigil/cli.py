"""The ``vigil`` command: the edge where stages, storage and the local stack meet."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

def _settings():
    from runtime.settings import load_settings

    return load_settings()


def _home() -> Path:
    from runtime.settings import vigil_home

    return vigil_home()


def _actor():
    """The authenticated operator: the operating system's login (never a name typed on the command line)."""
    from accountability.actors import cli_actor

    return cli_actor()


def _audit(settings):
    from accountability.audit import AuditLog

    return AuditLog(settings, client_id="vigil-cli")


def _refusals() -> tuple[type[BaseException], ...]:
    """What a command reports as an error line (exit 2) rather than a traceback."""
    from accountability.actors import NotAuthorised
    from accountability.deployments import DeploymentError
    from accountability.topics import NotRecorded
    from vigil.enroll import EnrollmentError

    return (NotRecorded, NotAuthorised, DeploymentError, EnrollmentError, LookupError, ValueError)


def _refusing(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except _refusals() as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return run


def cmd_up(args) -> int:
    from localstack.stack import up

    info = up(_home())
    print(json.dumps(info, indent=2, default=str))
    print(f"\nstack up; settings in {_home() / 'stack.yaml'} (read automatically from this folder, or export VIGIL_CONFIG=...)")
    return 0


def cmd_down(args) -> int:
    from localstack.stack import down

    down(_home())
    print("stack down")
    return 0


def cmd_status(args) -> int:
    from ingest.service import read_status
    from localstack.stack import status

    report = status(_home())
    report["ingest"] = read_status(_settings().ingest)  # each ingest process's cameras: state, fps, drops, last error
    print(json.dumps(report, indent=2, default=str))
    return 0


def cmd_stage(args) -> int:
    from schemas.stages import BY_NAME, INGEST

    settings = _settings()
    spec = BY_NAME[args.name]
    if spec is INGEST:
        from ingest.service import CAMERAS_FAILED_EXIT

        reports = spec.load()(settings).run()
        return 0 if all(r.state == "ended" for r in reports.values()) else CAMERAS_FAILED_EXIT
    from runtime.stream import StreamStage

    StreamStage(spec.load()(settings), settings).run()
    return 0


@_refusing
def cmd_enroll(args) -> int:
    from vigil.enroll import Enroller, parse_expiry, photos_by_person

    if bool(args.dir) == bool(args.person):
        print("give either PERSON_ID PHOTO... or --dir DIR", file=sys.stderr)
        return 2
    people = photos_by_person(Path(args.dir)) if args.dir else {args.person: [Path(p) for p in args.photos]}
    expires_at = parse_expiry(args.expires)
    actor = _actor()
    enroller = Enroller(_settings())
    refused_any, enrolled_any = False, False
    try:
        for person, photos in people.items():
            result = enroller.enroll(person, photos, actor=actor, reason=args.reason, expires_at=expires_at, source=args.source)
            print(f"{person}: enrolled {len(result.enrolled)} photo(s), expiring {result.expires_at:%Y-%m-%d %H:%M} UTC")
            for photo, why in result.refused.items():
                print(f"  refused {photo}: {why}", file=sys.stderr)
            refused_any |= bool(result.refused)
            enrolled_any |= bool(result.enrolled)
    finally:
        enroller.close()
    return 0 if enrolled_any and not refused_any else (1 if enrolled_any else 2)


@_refusing
def cmd_remove(args) -> int:
    from accountability.watchlist import remove_person

    settings = _settings()
    with _audit(settings) as audit:
        erased = remove_person(settings, _actor(), args.person, args.reason, audit=audit)
    print(f"{args.person}: removed {len(erased.entry_ids)} watchlist entr{'y' if len(erased.entry_ids) == 1 else 'ies'} "
          f"and {len(erased.photo_keys)} photo(s); Milvus asked to compact")
    return 0


@_refusing
def cmd_deployment(args) -> int:
    from accountability.deployments import DeploymentRequest, Deployments
    from schemas.events import parse_time, utc_now
    from vigil.enroll import parse_expiry
    from vigil.run import describe_deployment

    settings = _settings()
    with Deployments(settings) as deployments:
        if args.action == "start":
            starts_at = parse_time(args.start) if args.start else utc_now()
            ends_at = parse_expiry(args.end, now=starts_at)
            persons = [p for p in args.persons.split(",") if p] if args.persons is not None else None
            deployment = deployments.start(_actor(), DeploymentRequest(
                case=args.case, purpose=args.purpose, cameras=args.cameras.split(","), starts_at=starts_at, ends_at=ends_at,
                persons=persons, kind="retrospective" if args.retrospective else "live"))
            print(f"started {describe_deployment(deployment)}")
        elif args.action == "end":
            deployment = deployments.end(_actor(), args.deployment, args.reason)
            print(f"ended deployment {deployment.deployment_id} at {deployment.ended_at:%Y-%m-%d %H:%M:%S} UTC")
        else:
            found = deployments.list(active_at=None if args.all else utc_now())
            for deployment in found:
                print(deployment.model_dump_json() if args.json else describe_deployment(deployment)
                      + (f" [ended {deployment.ended_at:%Y-%m-%d %H:%M:%S} by {deployment.ended_by}]" if deployment.ended_at else ""))
            if not found and not args.json:
                print("no active deployment" if not args.all else "no deployment")
    return 0


@_refusing
def cmd_audit(args) -> int:
    from accountability.audit import AuditFilter, show, verify
    from schemas.events import parse_time

    settings = _settings()
    if args.action == "verify":
        report = verify(settings)
        head = report.head
        print(f"{report.events} sealed event(s) verified" + (f", head seq {head.seq} hash {head.hash}" if head else "")
              + f"; {report.anchors} anchor(s) checked" + (f" ({report.anchor_note})" if report.anchor_note else ""))
        if report.pending:
            print(f"{report.pending} audit request(s) not sealed yet (the audit stage seals them: vigil stage audit)")
        if report.breaks:
            print(f"CHAIN BROKEN at {report.breaks[0]}")
            for extra in report.breaks[1:]:
                print(f"  also at {extra}")
            return 1
        print("chain intact")
        return 0
    where = AuditFilter(person=args.person, actor=args.actor, action=args.action_name, deployment=args.deployment,
                        since=parse_time(args.since) if args.since else None, until=parse_time(args.until) if args.until else None)
    for event in show(settings, where):
        print(event.model_dump_json())
    return 0


@_refusing
def cmd_export(args) -> int:
    from vigil.export import export_alert

    settings = _settings()
    with _audit(settings) as audit:
        files = export_alert(settings, _actor(), args.alert_id, args.reason, Path(args.out), audit=audit)
    for path in files:
        print(path)
    return 0


def _sweep(settings, audit) -> dict[str, int]:
    """One retention sweep (accountability.retention.Housekeeper) and footage retention, as service ``housekeep``."""
    from datetime import timedelta

    from accountability.actors import service_actor
    from accountability.retention import Housekeeper
    from ingest.archive import FootageArchive
    from storage.objects import ObjectStore
    from storage.vectors import Watchlist

    store = ObjectStore(settings.s3)
    actor = service_actor("housekeep")
    with Watchlist(settings.milvus) as watchlist:
        watchlist.ensure_collection()
        counts = Housekeeper(settings, actor, audit=audit, store=store, watchlist=watchlist).sweep()
        counts["footage"] = FootageArchive(store).enforce_retention(timedelta(hours=settings.ingest.footage_retention_h),
                                                                    audit=audit, actor=actor)
    return counts


def _sweep_failures() -> tuple[type[BaseException], ...]:
    """What leaves a sweep for the next round (nothing is deleted unaudited) rather than failing the command."""
    from accountability.audit import AuditUnavailable
    from storage.objects import StorageError
    from storage.vectors import WatchlistError

    return (AuditUnavailable, StorageError, WatchlistError)


@_refusing
def cmd_housekeep(args) -> int:
    settings = _settings()
    if args.every is None:
        with _audit(settings) as audit:
            print(json.dumps(_sweep(settings, audit)))
        return 0
    import time

    every = args.every or settings.retention.sweep_interval_s
    with _audit(settings) as audit:
        while True:  # until interrupted; a failed round leaves its objects to the next
            began = time.monotonic()
            try:
                print(json.dumps(_sweep(settings, audit)), flush=True)
            except _sweep_failures() as exc:
                print(f"retention sweep skipped this round: {exc}", file=sys.stderr, flush=True)
            try:
                time.sleep(max(0.0, every - (time.monotonic() - began)))
            except KeyboardInterrupt:
                return 0


@_refusing
def cmd_run(args) -> int:
    home = _home()
    with contextlib.ExitStack() as cleanup:
        if not args.no_stack:
            from localstack.stack import running_stack

            print(f"starting the local stack in {home} ...", flush=True)
            info = cleanup.enter_context(running_stack(home))
            os.environ["VIGIL_CONFIG"] = str(info["config"])
        return _run_pipeline(args, home)


def _run_pipeline(args, home: Path) -> int:
    from vigil.enroll import Enroller, parse_expiry, photos_by_person
    from vigil.report import write_report
    from vigil.run import PipelineRun, describe_deployment, run_deployment

    settings = _settings()
    actor = _actor()
    people = photos_by_person(Path(args.watchlist)) if args.watchlist else {}
    run = PipelineRun(settings, args.sources, home=home)
    with _audit(settings) as audit, run_deployment(settings, actor, run, case=args.case or run.run_id, reason=args.reason,
                                                   persons=sorted(people) if args.watchlist else None, audit=audit) as use:
        print(f"this run is {describe_deployment(use.deployment)}", flush=True)
        if people:
            expires_at = parse_expiry(args.expires) if args.expires else use.deployment.ends_at
            enroller = Enroller(settings, audit=audit)
            try:
                for person, photos in people.items():
                    result = enroller.enroll(person, photos, actor=actor, reason=args.reason, expires_at=expires_at,
                                             deployment_id=use.deployment.deployment_id)
                    if not args.expires:
                        use.entry_ids += result.entry_ids  # they expire when the run's deployment ends
                    print(f"enrolled {person}: {len(result.enrolled)} photo(s)" + (f", refused {len(result.refused)}" if result.refused else ""))
                    for photo, why in result.refused.items():
                        print(f"  refused {photo}: {why}")
            finally:
                enroller.close()
        summary = run.execute()
        print(f"\nrun {summary.run_id} finished in {summary.wall_s:.1f}s")
        print(f"  {'frames':<12}{int(summary.counts.get('frames', 0)):>8}")
        for key in ("faces", "embeddings", "alerts", "dead_letters"):
            print(f"  {key:<12}{int(summary.counts.get(key, 0)):>8}")
        print("  fps per stage (events / busy second): " + ", ".join(f"{k} {v:.1f}" for k, v in summary.fps.items()))
        for camera, errors in summary.camera_errors.items():
            print(f"  camera {camera} failed: {errors[-1]}")
        for alert in summary.alerts:
            print(f"  alert: {alert.person_id} on {alert.camera_id} score {alert.score:.3f} deployment {alert.deployment_id} "
                  f"crop s3://{settings.s3.evidence_bucket}/{alert.crop_key}")
        if args.report:
            path = write_report(summary, Path(args.report), settings=settings, actor=actor, audit=audit,
                                deployment_id=use.deployment.deployment_id)
            print(f"report: {path} and {path.with_suffix('.html')} (other faces blurred)")
    print(f"deployment {use.deployment.deployment_id} ended" + (", the run's watchlist entries expired" if use.entry_ids else ""))
    # No stage sweeps: what retention says must go by now (expired entries, old frames and evidence) goes here.
    try:
        with _audit(settings) as audit:
            print(f"retention sweep: {json.dumps(_sweep(settings, audit))}")
    except _sweep_failures() as exc:
        print(f"retention sweep not done ({exc}): run `vigil housekeep`", file=sys.stderr)
    return 0


@_refusing
def cmd_replay(args) -> int:
    from schemas.events import parse_time

    settings = _settings()
    actor = _actor()
    if args.topic:
        from vigil.replay import replay_topic

        if not args.since:
            print("--topic needs --since TIME", file=sys.stderr)
            return 2
        until = parse_time(args.until) if args.until else None
        with _audit(settings) as audit:
            for read in replay_topic(settings, actor, args.topic, parse_time(args.since), reason=args.reason or "", audit=audit,
                                     until=until, idle_timeout_s=args.idle_exit):
                if read.event is None:
                    print(json.dumps({"error": read.error, "partition": read.partition, "offset": read.offset}), file=sys.stderr)
                else:
                    print(read.event.model_dump_json(), flush=True)
        return 0
    from vigil.replay import replay_footage, run_alerts

    if not (args.start and args.end and args.deployment and args.reason):
        print("--camera needs --from T1 --to T2 --deployment ID --reason WHY", file=sys.stderr)
        return 2
    with _audit(settings) as audit:
        replay = replay_footage(settings, actor, args.camera, parse_time(args.start), parse_time(args.end),
                                deployment_id=args.deployment, reason=args.reason, audit=audit)
    report = replay.report
    print(json.dumps({"run_id": replay.run_id, "camera": replay.camera_id, "from": replay.start.isoformat(),
                      "to": replay.end.isoformat(), "deployment": args.deployment, "state": report.state,
                      "frames": report.frames, "errors": report.errors}), flush=True)
    if args.alerts_idle is not None:
        for alert in run_alerts(settings, replay.run_id, since=replay.started_at, idle_timeout_s=args.alerts_idle):
            print(alert.model_dump_json(), flush=True)
    return 0 if report.state == "ended" else 3


def cmd_schemas(args) -> int:
    from schemas.export import export_json_schemas

    for path in export_json_schemas(Path(args.dir)):
        print(path)
    return 0


@_refusing
def cmd_alerts(args) -> int:
    from schemas.events import parse_time
    from vigil.replay import follow_alerts

    since = None
    if args.since:
        since = parse_time(args.since)
    elif not args.from_beginning:
        since = datetime.now(timezone.utc)
    settings = _settings()
    with _audit(settings) as audit:
        try:
            for read in follow_alerts(settings, _actor(), args.reason, since=since, audit=audit, idle_timeout_s=args.idle_exit):
                if read.event is None:
                    print(json.dumps({"error": read.error, "partition": read.partition, "offset": read.offset}), file=sys.stderr)
                else:
                    print(read.event.model_dump_json(), flush=True)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_console(args) -> int:
    from console.cli import serve_command, user_command

    if args.action == "user":
        return user_command(_settings(), _actor(), args.user_action, args.name, args.role or [], args.password_stdin)
    return serve_command(_settings(), args.host, args.port)


def cmd_config(args) -> int:
    from runtime.settings import VigilSettings

    settings = _settings()
    if args.schema:
        print(json.dumps(VigilSettings.model_json_schema(), indent=2))
    else:
        print(settings.model_dump_json(indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from schemas.stages import ALL_STAGES

    parser = argparse.ArgumentParser(prog="vigil", description="Find watch-listed faces in camera streams, with accountability built in.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("up", help="start the local stack (Kafka-protocol broker, S3 server, Milvus) on free loopback ports").set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop the local stack").set_defaults(fn=cmd_down)
    sub.add_parser("status", help="show the local stack's services").set_defaults(fn=cmd_status)

    p = sub.add_parser("stage", help="run one stage as a service (what Kubernetes runs)")
    p.add_argument("name", choices=[s.name for s in ALL_STAGES])
    p.set_defaults(fn=cmd_stage)

    p = sub.add_parser("enroll", help="enroll a person's photos into the watchlist (you: your login, see docs/accountability.md)")
    p.add_argument("person", nargs="?", help="person id")
    p.add_argument("photos", nargs="*", help="photos of that person (exactly one face each)")
    p.add_argument("--dir", help="folder with one sub-folder of photos per person")
    p.add_argument("--reason", required=True, help="why this person is on the watchlist (recorded in the audit log)")
    p.add_argument("--expires", required=True, metavar="DATE|DURATION",
                   help="when the entries expire: a date (2026-12-31: through that day), an ISO time or a duration (30d, 12h); "
                        "at most enroll.max_expiry_days away")
    p.add_argument("--source", help="where the photos came from (recorded with each entry; default: the file name)")
    p.set_defaults(fn=cmd_enroll)

    p = sub.add_parser("remove", help="erase a person: vectors from Milvus, photos from S3 (audited)")
    p.add_argument("person", help="person id")
    p.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    p.set_defaults(fn=cmd_remove)

    p = sub.add_parser("deployment", help="authorised uses: start, end, list")
    dep = p.add_subparsers(dest="action", required=True)
    d = dep.add_parser("start", help="authorise a use of the watchlist on named cameras for a window of time")
    d.add_argument("--case", required=True, help="case or reference number")
    d.add_argument("--purpose", required=True, help="why the use is needed (recorded in the audit log)")
    d.add_argument("--cameras", required=True, help="comma-separated camera ids")
    d.add_argument("--from", dest="start", metavar="T1", help="window start (ISO time; default now)")
    d.add_argument("--until", dest="end", required=True, metavar="T2|DURATION", help="window end: a time, a date or a duration from the start (8h)")
    d.add_argument("--persons", help="comma-separated person ids who may match (default: every entry in force; required with --retrospective)")
    d.add_argument("--retrospective", action="store_true", help="a search of recorded footage (vigil replay --camera), window in the past")
    d.set_defaults(fn=cmd_deployment)
    d = dep.add_parser("end", help="end a deployment now")
    d.add_argument("deployment", help="deployment id")
    d.add_argument("--reason", required=True)
    d.set_defaults(fn=cmd_deployment)
    d = dep.add_parser("list", help="active deployments (--all: every one)")
    d.add_argument("--all", action="store_true")
    d.add_argument("--json", action="store_true", help="one JSON record per line")
    d.set_defaults(fn=cmd_deployment)

    p = sub.add_parser("audit", help="the tamper-evident audit log: verify the chain, show events")
    aud = p.add_subparsers(dest="action", required=True)
    a = aud.add_parser("verify", help="walk the log and name the first event where the chain breaks (exit 1)")
    a.set_defaults(fn=cmd_audit)
    a = aud.add_parser("show", help="events as JSON lines, filtered (sealed ones, then those not sealed yet)")
    a.add_argument("--person", help="subject (person id, deployment id, ...)")
    a.add_argument("--actor")
    a.add_argument("--action", dest="action_name", help="enroll, remove, deployment_start, view, retention_delete, ...")
    a.add_argument("--deployment")
    a.add_argument("--since", help="ISO time")
    a.add_argument("--until", help="ISO time")
    a.set_defaults(fn=cmd_audit)

    p = sub.add_parser("export", help="an alert's evidence, every other face blurred, to a folder (audited)")
    p.add_argument("alert_id")
    p.add_argument("--reason", required=True)
    p.add_argument("--out", default="export", help="folder to write to (default ./export)")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("housekeep", help="one retention sweep now: transient evidence, frames, alert evidence, footage, expired entries")
    p.add_argument("--every", type=float, nargs="?", const=0.0, metavar="SECONDS",
                   help="sweep again every SECONDS (no value: retention.sweep_interval_s) until interrupted")
    p.set_defaults(fn=cmd_housekeep)

    p = sub.add_parser("run", help="run the whole pipeline on sources, every stage in its own process, under a deployment of its own")
    p.add_argument("sources", nargs="+", help="files or URLs; ID=URL names the camera")
    p.add_argument("--watchlist", help="folder with one sub-folder of photos per person, enrolled for the run "
                                       "(without it, the run matches the entries already enrolled)")
    p.add_argument("--reason", required=True, help="the purpose of the run (its deployment's purpose, the enrolment reason)")
    p.add_argument("--case", help="case or reference of the run's deployment (default: the run id)")
    p.add_argument("--expires", metavar="DATE|DURATION", help="expiry of the --watchlist entries (default: when the run ends)")
    p.add_argument("--report", help="write a JSON report here (and an HTML page beside it)")
    p.add_argument("--no-stack", action="store_true", help="use the configured services instead of starting the local stack")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("replay", help="replay recorded footage through the pipeline under a replay run id, "
                                      "or re-read a topic from a point in time")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--camera", help="camera whose recorded footage to replay (with --from and --to)")
    what.add_argument("--topic", help="registry topic to re-read (with --since), one JSON event per line")
    p.add_argument("--from", dest="start", metavar="T1", help="footage window start (ISO time; naive is UTC)")
    p.add_argument("--to", dest="end", metavar="T2", help="footage window end (exclusive)")
    p.add_argument("--since", help="topic: first record time (ISO; naive is UTC)")
    p.add_argument("--until", help="topic: last record time (default: read until idle)")
    p.add_argument("--idle-exit", type=float, default=5.0, help="topic: stop after this many seconds without records")
    p.add_argument("--alerts-idle", type=float, default=None, metavar="SECONDS",
                   help="footage: then print the replay's alerts until none came for SECONDS")
    p.add_argument("--deployment", help="footage: the retrospective deployment that covers it and names the persons searched for")
    p.add_argument("--reason", help="why (audited); required for footage and for topics that hold people's data")
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("schemas", help="event contracts")
    schema_sub = p.add_subparsers(dest="action", required=True)
    e = schema_sub.add_parser("export", help="write one JSON Schema file per event type")
    e.add_argument("dir")
    e.set_defaults(fn=cmd_schemas)

    p = sub.add_parser("alerts", help="follow the alerts topic as a downstream consumer would")
    p.add_argument("--since", help="ISO time to start from (default: now)")
    p.add_argument("--from-beginning", action="store_true", help="start from the earliest retained alert")
    p.add_argument("--idle-exit", type=float, default=None, help="exit after this many seconds without alerts")
    p.add_argument("--reason", default="following the alerts (vigil alerts)", help="why (audited: alerts identify people)")
    p.set_defaults(fn=cmd_alerts)

    p = sub.add_parser("console", help="serve the review console (web page and HTTP API), or manage its users")
    p.add_argument("--host", help="address to listen on (default console.host: loopback)")
    p.add_argument("--port", type=int, help="port (default console.port; 0 picks a free one)")
    console_sub = p.add_subparsers(dest="action")
    u = console_sub.add_parser("user", help="add, list, remove a console user or set their password (audited)")
    u.add_argument("user_action", choices=["add", "list", "remove", "passwd"])
    u.add_argument("name", nargs="?")
    u.add_argument("--role", action="append", choices=["admin", "authoriser", "enroller", "reviewer", "auditor"],
                   help="with add: a role (repeat for several)")
    u.add_argument("--password-stdin", action="store_true", help="read the password from stdin (default: generate and print one)")
    p.set_defaults(fn=cmd_console)

    p = sub.add_parser("config", help="print the effective settings (or their JSON Schema)")
    p.add_argument("--schema", action="store_true")
    p.set_defaults(fn=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
