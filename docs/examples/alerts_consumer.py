"""A minimal downstream consumer of Vigil alerts, in plain kafka-python.

It joins its own consumer group, validates every alert against the JSON Schema
that `vigil schemas export DIR` wrote, and deduplicates on `alert_id` (Vigil
delivers at least once). It needs only `kafka-python` and `jsonschema`.

    python alerts_consumer.py --bootstrap HOST:PORT --schemas DIR [--group my-service] [--max N]
"""

import argparse
import json
import sys
from pathlib import Path

import jsonschema
from kafka import KafkaConsumer

ALERTS_TOPIC = "vigil.alerts.v1"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--schemas", required=True, type=Path, help="folder written by `vigil schemas export`")
    parser.add_argument("--group", default="alerts-example")
    parser.add_argument("--max", type=int, default=0, help="stop after this many valid alerts (0: never)")
    parser.add_argument("--idle-exit", type=float, default=0, help="stop after this many seconds without messages (0: never)")
    args = parser.parse_args()

    schema = json.loads((args.schemas / "alert.v1.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    consumer = KafkaConsumer(
        ALERTS_TOPIC,
        bootstrap_servers=args.bootstrap.split(","),
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,  # commit only after handling
        consumer_timeout_ms=int(args.idle_exit * 1000) if args.idle_exit else float("inf"),
    )
    seen: set[str] = set()
    handled = 0
    for message in consumer:
        try:
            alert = json.loads(message.value)
            validator.validate(alert)
        except (ValueError, jsonschema.ValidationError) as exc:
            print(f"skipping invalid message at {message.partition}/{message.offset}: {str(exc).splitlines()[0]}", file=sys.stderr)
            consumer.commit()
            continue
        if alert["alert_id"] not in seen:  # a redelivery has the same alert_id
            seen.add(alert["alert_id"])
            handled += 1
            print(json.dumps({k: alert[k] for k in ("alert_id", "person_id", "camera_id", "score", "source_ts", "crop_key")}), flush=True)
        consumer.commit()
        if args.max and handled >= args.max:
            break
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
