"""When `vigil run` calls the pipeline drained, derived from the stage topology (pure logic, no services)."""

from __future__ import annotations

from runtime.metrics import Scrape
from schemas.stages import STREAM_STAGES
from vigil.run import drained, handled, produced


def page(stage: str, inputs: dict[str, float], outputs: dict[str, float]) -> Scrape:
    lines = ["# TYPE vigil_events_in_total counter", "# TYPE vigil_events_out_total counter"]
    lines += [f'vigil_events_in_total{{stage="{stage}",topic="{t}"}} {n}' for t, n in inputs.items()]
    lines += [f'vigil_events_out_total{{stage="{stage}",topic="{t}"}} {n}' for t, n in outputs.items()]
    return Scrape("\n".join(lines) + "\n")


def scrapes(detect_in: float, faces: float, embed_in: float, embeddings: float, match_in: float) -> dict[str, Scrape]:
    return {
        "detect": page("detect", {"vigil.frames.v1": detect_in}, {"vigil.faces.v1": faces}),
        "embed": page("embed", {"vigil.faces.v1": embed_in}, {"vigil.embeddings.v1": embeddings}),
        "match": page("match", {"vigil.embeddings.v1": match_in}, {"vigil.alerts.v1": 1}),
    }


def test_drained_only_when_every_stage_caught_up_with_its_upstream():
    assert drained(scrapes(10, 4, 4, 4, 4), published=10)
    assert not drained(scrapes(9, 4, 4, 4, 4), published=10)  # detect behind ingest
    assert not drained(scrapes(10, 4, 3, 3, 3), published=10)  # embed behind detect
    assert not drained(scrapes(10, 4, 4, 4, 3), published=10)  # match behind embed


def test_handled_and_produced_read_each_stage_source():
    pages = scrapes(10, 4, 3, 3, 2)
    by_name = {s.name: s for s in STREAM_STAGES}
    assert handled(pages, by_name["embed"]) == 3 and produced(pages, by_name["embed"], 10) == 4
    assert produced(pages, by_name["detect"], 10) == 10  # ingest's frames come from its report
