"""Fixtures of the accountability tests: settings on a broker of their own, with buckets and a collection of their own.

A forged event on the session's audit topic would break every later `vigil audit verify`, and a paused broker
would stall every other client: those tests get a fresh Tansu broker (as the ingest tests do) and S3 buckets and a
Milvus collection no other test reads.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from runtime.settings import VigilSettings
from storage.objects import ObjectStore
from storage.vectors import Watchlist
from tests.ingest.conftest import tansu_available, tansu_broker


def isolated(settings: VigilSettings, kafka=None) -> VigilSettings:
    """``settings`` with buckets, a collection and an anchor bucket of their own (and ``kafka``, if given)."""
    tag = uuid.uuid4().hex[:8]
    s3 = settings.s3.model_copy(update={name: f"test-{tag}-{name.split('_')[0]}" for name in
                                        ("evidence_bucket", "frames_bucket", "footage_bucket", "watchlist_bucket")})
    update = {"s3": s3, "milvus": settings.milvus.model_copy(update={"collection": f"test_{tag}"}),
              "audit": settings.audit.model_copy(update={"anchor_bucket": f"test-{tag}-audit", "deliver_timeout_s": 5.0})}
    if kafka is not None:
        update["kafka"] = kafka
    return settings.model_copy(update=update)


@pytest.fixture
def own_settings(stack, weights_dir, tmp_path):
    """The session's S3 and Milvus with buckets and a collection of this test's, on a fresh broker."""
    if not tansu_available():
        pytest.skip("needs the Tansu broker of the local stack")
    with tansu_broker(tmp_path) as kafka:
        settings = isolated(stack.settings, kafka)
        settings.models.weights_dir = weights_dir
        ObjectStore(settings.s3).ensure_buckets()
        yield settings
        with Watchlist(settings.milvus) as watchlist:
            watchlist.drop()


def pid_listening(port: int) -> int:
    """The pid of the process whose command line names 127.0.0.1:``port`` (the Tansu broker started above)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"127.0.0.1:{port}" in cmdline and "tansu" in cmdline:
                return int(entry.name)
    raise LookupError(f"no broker on port {port}")
