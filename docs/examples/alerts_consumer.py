"""A minimal downstream consumer of Vigil alerts, in plain kafka-python.

It joins its own consumer group, logs in as production requires (SASL_SSL with SCRAM), skips replayed alerts
(the ``vigil-run-id`` header), validates every alert against the published JSON Schema (docs/schemas, or what
`vigil schemas export DIR` wrote), deduplicates on ``alert_id`` (Vigil delivers at least once) and commits
only after an alert is handled. It needs only ``kafka-python`` and ``jsonschema``.

    python alerts_consumer.py --bootstrap HOST:PORT --schemas DIR [--group my-service]
        [--security-protocol SASL_SSL --sasl-username USER --ca-file ca.crt]   # password in $KAFKA_SASL_PASSWORD
        [--topic vigil.confirmed.v1] [--include-runs] [--max N] [--idle-exit S]
"""

import argparse
import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

import jsonschema
from kafka import KafkaConsumer

RUN_HEADER = "vigil-run-id"  # present on events of a replay or a test run, absent on live ones
SEEN_MAX = 100_000  # alert ids remembered for deduplication (a real service keeps them in its own store)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--schemas", required=True, type=Path, help="folder of Vigil's JSON Schemas")
    parser.add_argument("--topic", default="vigil.alerts.v1", help="vigil.alerts.v1, or vigil.confirmed.v1 for reviewed alerts")
    parser.add_argument("--group", default="alerts-example")
    parser.add_argument("--security-protocol", default="PLAINTEXT", choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
    parser.add_argument("--sasl-mechanism", default="SCRAM-SHA-512")
    parser.add_argument("--sasl-username")
    parser.add_argument("--ca-file", help="PEM of the CA that signs the brokers' certificates (default: the system's)")
    parser.add_argument("--include-runs", action="store_true", help="also handle replayed and test-run alerts")
    parser.add_argument("--max", type=int, default=0, help="stop after this many handled alerts (0: never)")
    parser.add_argument("--idle-exit", type=float, default=0, help="stop after this many seconds without messages (0: never)")
    return parser.parse_args(argv)


def consumer_config(args: argparse.Namespace) -> dict:
    config = {
        "bootstrap_servers": args.bootstrap.split(","),
        "group_id": args.group,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,  # commit only after handling
        "security_protocol": args.security_protocol,
    }
    if "SSL" in args.security_protocol and args.ca_file:
        config["ssl_cafile"] = args.ca_file
    if args.security_protocol.startswith("SASL_"):
        config.update(sasl_mechanism=args.sasl_mechanism, sasl_plain_username=args.sasl_username,
                      sasl_plain_password=os.environ["KAFKA_SASL_PASSWORD"])  # never on the command line
    if args.idle_exit:
        config["consumer_timeout_ms"] = int(args.idle_exit * 1000)
    return config


def handle(alert: dict) -> None:
    """Your system's action; here, one line of JSON."""
    print(json.dumps({k: alert[k] for k in ("alert_id", "person_id", "camera_id", "score", "source_ts", "crop_key")}), flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    event = "confirmed_alert" if args.topic.startswith("vigil.confirmed.") else "alert"
    validator = jsonschema.Draft202012Validator(json.loads((args.schemas / f"{event}.v1.schema.json").read_text()))
    consumer = KafkaConsumer(args.topic, **consumer_config(args))
    seen: OrderedDict[str, None] = OrderedDict()
    handled = 0
    for message in consumer:
        headers = dict(message.headers or [])
        if RUN_HEADER in headers and not args.include_runs:
            consumer.commit()
            continue
        try:
            payload = json.loads(message.value)
            validator.validate(payload)  # unknown fields are allowed: newer producers may add optional ones
            alert = payload["alert"] if event == "confirmed_alert" else payload  # a confirmed alert wraps the alert
        except (ValueError, jsonschema.ValidationError) as exc:
            print(f"skipping invalid message at {message.partition}/{message.offset}: {str(exc).splitlines()[0]}", file=sys.stderr)
            consumer.commit()
            continue
        if alert["alert_id"] not in seen:  # a redelivery has the same alert_id
            handle(alert)
            handled += 1
        seen[alert["alert_id"]] = None
        seen.move_to_end(alert["alert_id"])
        if len(seen) > SEEN_MAX:
            seen.popitem(last=False)
        consumer.commit()
        if args.max and handled >= args.max:
            break
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
