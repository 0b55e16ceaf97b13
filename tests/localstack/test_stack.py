"""The local stack (localstack.stack): real servers, several at once, clean stops."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from runtime.settings import KafkaSettings, MilvusSettings, S3Settings
from storage.objects import ObjectStore
from storage.vectors import DIM, Watchlist
from localstack import stack as local_stack

LATER = datetime.now(timezone.utc) + timedelta(days=1)  # watchlist entries expire; these outlive the test

pytestmark = pytest.mark.services
SERVICES = {"kafka", "s3", "milvus"}


def listeners(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].split(":")
                if fields[3] == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}


def processes_of(home: Path) -> list[int]:
    """Pids whose command line or working directory lies in ``home``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(home) in cmdline or cwd.startswith(str(home)):
            pids.append(int(entry.name))
    return pids


def stack_settings(config: Path) -> tuple[KafkaSettings, S3Settings, MilvusSettings]:
    data = yaml.safe_load(config.read_text())
    return KafkaSettings(**data["kafka"]), S3Settings(**data["s3"]), MilvusSettings(**data["milvus"])


@pytest.fixture()
def session_home(stack) -> Path:
    if stack.home is None:
        pytest.skip("VIGIL_TEST_STACK names services started elsewhere")
    return stack.home


def test_session_stack_reports_up(stack, session_home):
    report = local_stack.status(session_home)
    assert report["running"] and set(report["services"]) == SERVICES
    assert all(s["state"] == "up" for s in report["services"].values())
    settings = stack.settings
    assert report["services"]["kafka"]["endpoint"] == settings.kafka.bootstrap
    assert report["services"]["s3"]["endpoint"] == settings.s3.endpoint
    assert report["services"]["milvus"]["endpoint"] == settings.milvus.uri
    assert settings.milvus.token and settings.s3.secret_key != S3Settings().secret_key
    for service in report["services"].values():
        assert Path(service["log"]).is_file()
    print(f"session stack started in {stack.startup_s:.1f} s")


def test_ports_that_can_be_private_are_on_loopback(session_home):
    info = local_stack.up(session_home)  # already running: describes it
    assert info["reused"]
    ports = info["services"]
    private = [*ports["kafka"]["ports"].values(), *ports["s3"]["ports"].values(),
               ports["milvus"]["ports"]["etcd"], ports["milvus"]["ports"]["etcd_peer"]]
    assert len(ports["s3"]["ports"]) == 10  # five HTTP ports and their gRPC ports
    for port in private:
        assert listeners(port) and listeners(port) <= LOOPBACK, port
    assert listeners(ports["milvus"]["ports"]["proxy"])  # Milvus 2.3.5 binds every interface: auth is on


@pytest.mark.slow
def test_two_stacks_at_once_then_down_twice_then_restart(stack, session_home, tmp_path):
    home = tmp_path / "second"
    try:
        first = local_stack.status(session_home)
        info = local_stack.up(home)
        assert not info["reused"]
        ours = {p for s in info["services"].values() for p in s["ports"].values()}
        theirs = {p for s in local_stack.up(session_home)["services"].values() for p in s["ports"].values()}
        assert not ours & theirs
        assert local_stack.status(home)["running"] and local_stack.status(session_home)["running"]

        kafka, s3, milvus = stack_settings(Path(info["config"]))
        assert kafka.bootstrap != stack.settings.kafka.bootstrap
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        admin.list_topics()
        admin.close()
        store = ObjectStore(s3)
        store.ensure_buckets()
        store.put_bytes(s3.evidence_bucket, "kept.txt", b"still here", "text/plain")
        wl = Watchlist(milvus.model_copy(update={"collection": "restart_check"}))
        wl.ensure_collection()
        vec = np.random.default_rng(7).normal(size=(2, DIM))
        wl.add("dave", vec, ["a", "b"], "officer", "restart test", expires_at=LATER)
        wl.close()

        assert sorted(local_stack.down(home)) == sorted(SERVICES)
        report = local_stack.status(home)
        assert not report["running"] and all(s["state"] == "down" for s in report["services"].values())
        assert not (home / "stack.json").exists() and not (home / "stack.yaml").exists()
        assert processes_of(home) == []
        assert local_stack.down(home) == []  # idempotent
        assert local_stack.status(session_home)["services"] == first["services"]  # the other stack is untouched

        # Restart in the same home: Milvus data, its password and the S3 objects survive.
        with local_stack.running_stack(home) as again:
            assert not again["reused"]
            _, s3b, milvusb = stack_settings(Path(again["config"]))
            assert (s3b.secret_key, milvusb.token) == (s3.secret_key, milvus.token)
            assert ObjectStore(s3b).get_bytes(s3.evidence_bucket, "kept.txt") == b"still here"
            wl = Watchlist(milvusb.model_copy(update={"collection": "restart_check"}))
            wl.ensure_collection()
            assert wl.persons() == {"dave": 2}
            wl.close()
        assert not local_stack.status(home)["running"] and processes_of(home) == []
    finally:
        local_stack.down(home)  # whatever a failure left running


def test_failed_start_names_the_service_and_cleans_up(tmp_path):
    home = tmp_path / "impatient"
    with pytest.raises(local_stack.StackError) as err:
        local_stack.up(home, timeout_s=0.01)  # nothing is ready that fast (Milvus takes seconds)
    message = str(err.value)
    assert re.search(r"\b(kafka|s3|milvus) not ready after", message), message
    assert "last lines of" in message and str(home / "logs") in message
    assert not local_stack.status(home)["running"]
    assert not (home / "stack.json").exists() and processes_of(home) == []


def test_down_and_status_of_an_empty_home(tmp_path):
    assert local_stack.down(tmp_path) == []
    report = local_stack.status(tmp_path)
    assert report["running"] is False
    assert {name: s["state"] for name, s in report["services"].items()} == {n: "down" for n in SERVICES}
