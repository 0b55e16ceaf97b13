"""Write one JSON Schema file per event type, for downstream consumers."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.events import EVENT_TYPES
from schemas.topics import ALL_TOPICS


def export_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    topics_by_event = {t.event: t.name for t in ALL_TOPICS}
    written = []
    for event in EVENT_TYPES:
        schema = event.model_json_schema(mode="serialization")
        event_type = event.model_fields["event_type"].default
        version = event.model_fields["schema_version"].default
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"urn:vigil:event:{event_type}:v{version}"
        schema["x-vigil-topic"] = topics_by_event.get(event)
        # Said outright for every consumer: optional fields may be added within a version, so ignore what you do not know.
        schema["additionalProperties"] = True
        path = directory / f"{event_type}.v{version}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
