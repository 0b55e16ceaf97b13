"""The ``vigil`` command: the edge where stages, storage and the local stack meet."""

from __future__ import annotations

import argparse
import contextlib
import getpass
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
        reports = spec.load()(settings).run()
        return 0 if all(r.state == "ended" for r in reports.values()) else 3
    from runtime.stream import StreamStage

    StreamStage(spec.load()(settings), settings).run()
    return 0


def cmd_enroll(args) -> int:
    from vigil.enroll import Enroller, EnrollmentError, photos_by_person

    if bool(args.dir) == bool(args.person):
        print("give either PERSON_ID PHOTO... or --dir DIR", file=sys.stderr)
        return 2
    try:
        people = photos_by_person(Path(args.dir)) if args.dir else {args.person: [Path(p) for p in args.photos]}
    except EnrollmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    enroller = Enroller(_settings())
    refused_any, enrolled_any = False, False
    try:
        for person, photos in people.items():
            result = enroller.enroll(person, photos, actor=args.by, reason=args.reason)
            print(f"{person}: enrolled {len(result.enrolled)} photo(s)")
            for photo, why in result.refused.items():
                print(f"  refused {photo}: {why}", file=sys.stderr)
            refused_any |= bool(result.refused)
            enrolled_any |= bool(result.enrolled)
    finally:
        enroller.close()
    return 0 if enrolled_any and not refused_any else (1 if enrolled_any else 2)


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
    from vigil.enroll import Enroller, photos_by_person
    from vigil.report import write_report
    from vigil.run import PipelineRun

    settings = _settings()
    if args.watchlist:
        enroller = Enroller(settings)
        try:
            for person, photos in photos_by_person(Path(args.watchlist)).items():
                result = enroller.enroll(person, photos, actor=args.by, reason=args.reason)
                print(f"enrolled {person}: {len(result.enrolled)} photo(s)" + (f", refused {len(result.refused)}" if result.refused else ""))
                for photo, why in result.refused.items():
                    print(f"  refused {photo}: {why}")
        finally:
            enroller.close()
    run = PipelineRun(settings, args.sources, home=home)
    summary = run.execute()
    print(f"\nrun {summary.run_id} finished in {summary.wall_s:.1f}s")
    print(f"  {'frames':<12}{int(summary.counts.get('frames', 0)):>8}")
    for key in ("faces", "embeddings", "alerts", "dead_letters"):
        print(f"  {key:<12}{int(summary.counts.get(key, 0)):>8}")
    print("  fps per stage (events / busy second): " + ", ".join(f"{k} {v:.1f}" for k, v in summary.fps.items()))
    for camera, errors in summary.camera_errors.items():
        print(f"  camera {camera} failed: {errors[-1]}")
    for alert in summary.alerts:
        print(f"  alert: {alert.person_id} on {alert.camera_id} score {alert.score:.3f} crop s3://{settings.s3.evidence_bucket}/{alert.crop_key}")
    if args.report:
        path = write_report(summary, Path(args.report), settings=settings)
        print(f"report: {path} and {path.with_suffix('.html')}")
    return 0


def cmd_replay(args) -> int:
    try:
        return _replay(args)
    except ValueError as exc:  # a bad time, window or topic name
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _replay(args) -> int:
    from schemas.events import parse_time

    settings = _settings()
    if args.topic:
        from vigil.replay import replay_topic

        if not args.since:
            print("--topic needs --since TIME", file=sys.stderr)
            return 2
        until = parse_time(args.until) if args.until else None
        for read in replay_topic(settings, args.topic, parse_time(args.since), until=until, idle_timeout_s=args.idle_exit):
            if read.event is None:
                print(json.dumps({"error": read.error, "partition": read.partition, "offset": read.offset}), file=sys.stderr)
            else:
                print(read.event.model_dump_json(), flush=True)
        return 0
    from vigil.replay import replay_footage, run_alerts

    if not (args.start and args.end):
        print("--camera needs --from T1 --to T2", file=sys.stderr)
        return 2
    replay = replay_footage(settings, args.camera, parse_time(args.start), parse_time(args.end))
    report = replay.report
    print(json.dumps({"run_id": replay.run_id, "camera": replay.camera_id, "from": replay.start.isoformat(),
                      "to": replay.end.isoformat(), "state": report.state, "frames": report.frames,
                      "errors": report.errors}), flush=True)
    if args.alerts_idle is not None:
        for alert in run_alerts(settings, replay.run_id, since=replay.started_at, idle_timeout_s=args.alerts_idle):
            print(alert.model_dump_json(), flush=True)
    return 0 if report.state == "ended" else 3


def cmd_schemas(args) -> int:
    from schemas.export import export_json_schemas

    for path in export_json_schemas(Path(args.dir)):
        print(path)
    return 0


def cmd_alerts(args) -> int:
    from runtime.kafka import EventReader
    from schemas.events import parse_time
    from schemas.topics import ALERTS

    since = None
    if args.since:
        since = parse_time(args.since)
    elif not args.from_beginning:
        since = datetime.now(timezone.utc)
    with EventReader(_settings().kafka, ALERTS, since=since) as reader:
        try:
            for read in reader.follow(idle_timeout_s=args.idle_exit):
                if read.event is None:
                    print(json.dumps({"error": read.error, "partition": read.partition, "offset": read.offset}), file=sys.stderr)
                else:
                    print(read.event.model_dump_json(), flush=True)
        except KeyboardInterrupt:
            pass
    return 0


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

    who = os.environ.get("VIGIL_OPERATOR") or getpass.getuser()
    p = sub.add_parser("enroll", help="enroll a person's photos into the watchlist")
    p.add_argument("person", nargs="?", help="person id")
    p.add_argument("photos", nargs="*", help="photos of that person (exactly one face each)")
    p.add_argument("--dir", help="folder with one sub-folder of photos per person")
    p.add_argument("--reason", required=True, help="why this person is on the watchlist (recorded in the audit log)")
    p.add_argument("--by", default=who, help="operator enrolling (default: $VIGIL_OPERATOR or the login name)")
    p.set_defaults(fn=cmd_enroll)

    p = sub.add_parser("run", help="run the whole pipeline on sources, every stage in its own process")
    p.add_argument("sources", nargs="+", help="files or URLs; ID=URL names the camera")
    p.add_argument("--watchlist", help="folder with one sub-folder of photos per person, enrolled first")
    p.add_argument("--reason", default="vigil run watchlist", help="enrolment reason recorded in the audit log")
    p.add_argument("--by", default=who, help="operator (audit log)")
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
    p.set_defaults(fn=cmd_alerts)

    p = sub.add_parser("config", help="print the effective settings (or their JSON Schema)")
    p.add_argument("--schema", action="store_true")
    p.set_defaults(fn=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
