"""A tiny stream stage for runtime tests: ``python -m tests.runtime.tiny_stage`` with its behaviour in the environment.

TINY_ID names its topics (``test.tiny-<id>-in.v1`` -> ``test.tiny-<id>-out.v1``) and its consumer group;
TINY_MODE says what ``process`` does: ``echo`` (one output per input), ``huge`` (an output over the producer's
request limit: the delivery fails), ``s3-denied`` (reads S3 with a wrong secret: a permanent error);
TINY_START_S makes ``start`` take that long and TINY_MARK names a file written when it returns (``<mark>.processed``
when ``process`` first runs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import SecretStr

from runtime.settings import load_settings
from runtime.stream import StreamProcessor, StreamStage
from schemas.events import DeadLetterEvent
from schemas.stages import StageSpec
from schemas.topics import TopicSpec


def topics(tiny_id: str) -> tuple[TopicSpec, TopicSpec]:
    def spec(part: str) -> TopicSpec:
        return TopicSpec(f"test.tiny-{tiny_id}-{part}.v1", DeadLetterEvent, "camera_id", 1, 3_600_000, "delete", "runtime tests")
    return spec("in"), spec("out")


def stage_spec(tiny_id: str) -> StageSpec:
    source, out = topics(tiny_id)
    return StageSpec(f"tiny-{tiny_id}", "tests.runtime.tiny_stage:TinyProcessor", source, (out,), uses_models=False,
                     lag_per_replica=None, description="a tiny stage for runtime tests")


class TinyProcessor(StreamProcessor):
    stage = stage_spec(os.environ.get("TINY_ID", "unset"))
    batch_size = 8
    batch_wait_s = 0.2

    def start(self) -> None:
        time.sleep(float(os.environ.get("TINY_START_S", "0")))
        if os.environ.get("TINY_MARK"):
            Path(os.environ["TINY_MARK"]).write_text(str(time.time()))

    def process(self, events):
        mark = os.environ.get("TINY_MARK")
        if mark and not Path(f"{mark}.processed").exists():
            Path(f"{mark}.processed").write_text(str(time.time()))
        mode = os.environ.get("TINY_MODE", "echo")
        out = self.stage.outputs[0]
        if mode == "s3-denied":
            from storage.objects import ObjectStore

            s3 = self.settings.s3
            ObjectStore(s3.model_copy(update={"secret_key": SecretStr("wrong")}), retries=0).get_bytes(s3.evidence_bucket, "x")
        payload = b"x" * (9 * 1024 * 1024) if mode == "huge" else b"echo"
        return [(out, event.model_copy(update={"payload": payload, "error": f"echo of {event.event_id}"})) for event in events]


if __name__ == "__main__":
    settings = load_settings()
    StreamStage(TinyProcessor(settings), settings).run()
