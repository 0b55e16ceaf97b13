"""The local stack (localstack.stack): real servers, several at once, locked down, clean stops."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
import http.client
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
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


LOOPBACK = {"127.0.0.1", "[::1]"}
TOOLS_MISSING = "ss and ip (iproute2) and nsenter (util-linux) are needed: scripts/setup.sh installs them"


def in_netns_of(pid: int | None, command: list[str]) -> list[str]:
    """``command`` run in the network namespace of ``pid`` (this process's when None)."""
    if pid is None:
        return command
    enter = ["nsenter", f"--target={pid}", "--net"]
    if os.geteuid() != 0:  # an unprivileged stack's namespace belongs to a user namespace of its own
        enter += ["--user", "--preserve-credentials"]
    return [*enter, "--", *command]


def tcp_listeners(netns_pid: int | None = None) -> list[tuple[str, int, set[int]]]:
    """Every TCP listener of a network namespace, from ``ss -ltnp``: (address, port, pids holding it)."""
    out = subprocess.run(in_netns_of(netns_pid, ["ss", "-ltnpH"]), capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        address, _, port = fields[3].rpartition(":")
        found.append((address.split("%")[0], int(port), {int(p) for p in re.findall(r"pid=(\d+)", line)}))
    return found


def client_port(service: dict) -> int:
    return int(service["endpoint"].rsplit(":", 1)[1])


def refused(port: int, method: str = "GET") -> bool:
    """Whether a plain HTTP request to 127.0.0.1:``port`` finds nothing listening."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request(method, "/vigil-check/object", body=b"x" if method == "PUT" else None)
        conn.getresponse().read()
    except ConnectionRefusedError:
        return True
    finally:
        conn.close()
    return False


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


def test_every_listener_is_on_loopback(session_home):
    """Host: each service has exactly its client port, on 127.0.0.1. S3 and Milvus: a namespace with only lo."""
    import shutil

    assert all(map(shutil.which, ("ss", "ip", "nsenter"))), TOOLS_MISSING
    info = local_stack.up(session_home)  # already running: describes it
    assert info["reused"]
    procs = local_stack.pids(session_home)
    assert set(procs) == SERVICES and all(procs.values()), procs
    ours = {pid for members in procs.values() for pid in members}
    host = [row for row in tcp_listeners() if row[2] & ours]
    for address, port, holders in host:
        assert address in LOOPBACK, f"{address}:{port} held by {holders}"
    # Nothing but the three client ports: SeaweedFS's and Milvus's other ports are not on the host at all.
    assert {port for _, port, _ in host} == {client_port(s) for s in info["services"].values()}, host

    netns = {name: {os.readlink(f"/proc/{pid}/ns/net") for pid in members} for name, members in procs.items()}
    here = os.readlink("/proc/self/ns/net")
    assert netns["kafka"] == {here}
    assert len(netns["s3"]) == len(netns["milvus"]) == 1 and not {here} & (netns["s3"] | netns["milvus"])
    assert netns["s3"] != netns["milvus"]
    for name, at_least in (("s3", 10), ("milvus", 9)):
        launcher = procs[name][0]
        links = subprocess.run(in_netns_of(launcher, ["ip", "-o", "link"]), capture_output=True, text=True,
                               check=True).stdout.splitlines()
        assert [line.split(":")[1].strip() for line in links] == ["lo"], links
        # The internal ports are there (Milvus's on every interface, of which lo is the only one).
        inside = tcp_listeners(launcher)
        assert len(inside) >= at_least and client_port(info["services"][name]) in {p for _, p, _ in inside}, inside


def test_folders_are_private_and_secrets_owner_only(session_home):
    for folder in (session_home, session_home / "data", session_home / "logs", session_home / "data" / "s3",
                   session_home / "data" / "milvus"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    logs = sorted((session_home / "logs").glob("*.log"))  # the services', and those of runs other tests made here
    assert {"kafka.log", "s3.log", "milvus.log"} <= {path.name for path in logs}
    files = [session_home / "stack.yaml", session_home / "stack.json", session_home / "data" / "credentials.json",
             session_home / "data" / "s3.json", *logs, *(session_home / "logs").glob("*.json")]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_no_unauthenticated_way_into_s3(stack, session_home):
    info = local_stack.up(session_home)["services"]["s3"]
    ports = info["ports"]
    for name in ("master", "volume", "filer", "admin"):
        for port in (ports[name], ports[name] + local_stack.GRPC_OFFSET):
            for method in ("GET", "PUT"):
                assert refused(port, method), f"{name} answers {method} on {port}"
    assert refused(ports["s3"] + local_stack.GRPC_OFFSET)
    # The S3 API refuses anonymous requests and serves the stack's key.
    conn = http.client.HTTPConnection("127.0.0.1", ports["s3"], timeout=5)
    conn.request("PUT", f"/{stack.settings.s3.evidence_bucket}/anonymous.txt", body=b"x")
    assert conn.getresponse().status == 403
    conn.close()
    store = ObjectStore(stack.settings.s3)
    store.ensure_buckets()
    store.put_bytes(stack.settings.s3.evidence_bucket, "lockdown/kept.txt", b"signed", "text/plain")
    assert store.get_bytes(stack.settings.s3.evidence_bucket, "lockdown/kept.txt") == b"signed"


def test_milvus_default_login_refused(stack):
    from pymilvus import MilvusClient

    uri = stack.settings.milvus.uri
    with pytest.raises(Exception, match="(?i)auth|password|credential|denied|fail"):
        MilvusClient(uri, token=local_stack.Milvus.DEFAULT_TOKEN, timeout=5)
    client = MilvusClient(uri, token=stack.settings.milvus.token.get_secret_value(), timeout=5)
    client.list_collections()
    client.close()


class DefaultLoginWatch(threading.Thread):
    """Tries Milvus's default login on a port over and over until stopped; keeps what answered."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.stop, self.accepted, self.attempts = port, threading.Event(), [], 0

    def run(self) -> None:
        from pymilvus import MilvusClient

        while not self.stop.is_set():
            self.attempts += 1
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
            except OSError:  # not published yet
                time.sleep(0.02)
                continue
            try:
                MilvusClient(f"http://127.0.0.1:{self.port}", token=local_stack.Milvus.DEFAULT_TOKEN, timeout=3).close()
                self.accepted.append(time.monotonic())
            except Exception:  # noqa: BLE001 - refused, as it must be
                pass


def watch_default_login(home: Path) -> DefaultLoginWatch:
    """A watch on the Milvus port of the stack ``home`` is starting (read from its state file once written)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            port = json.loads((home / "stack.json").read_text())["services"]["milvus"]["client_port"]
            break
        except (OSError, ValueError, KeyError):
            time.sleep(0.01)
    else:
        raise AssertionError("the stack never recorded Milvus's port")
    watch = DefaultLoginWatch(port)
    watch.start()
    return watch


@pytest.mark.slow
def test_two_stacks_at_once_then_down_twice_then_restart(stack, session_home, tmp_path):
    home = tmp_path / "second"
    try:
        first = local_stack.status(session_home)
        starting = threading.Thread(target=lambda: watches.append(watch_default_login(home)), daemon=True)
        watches: list[DefaultLoginWatch] = []
        starting.start()
        info = local_stack.up(home)
        starting.join()
        time.sleep(1)  # a little more of the default login refused on the published port
        watches[0].stop.set()
        watches[0].join()
        assert watches[0].accepted == [] and watches[0].attempts > 10
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

        ended = local_stack.down(home)
        print(f"stop times: {ended}")
        assert set(ended) == SERVICES
        assert all(e["how"] == "stopped" and e["seconds"] < 8 for e in ended.values()), ended  # no SIGKILL
        report = local_stack.status(home)
        assert not report["running"] and all(s["state"] == "down" for s in report["services"].values())
        assert not (home / "stack.json").exists() and not (home / "stack.yaml").exists()
        assert processes_of(home) == []
        assert local_stack.down(home) == {}  # idempotent
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
    assert local_stack.down(tmp_path) == {}
    report = local_stack.status(tmp_path)
    assert report["running"] is False
    assert {name: s["state"] for name, s in report["services"].items()} == {n: "down" for n in SERVICES}


@pytest.mark.slow
def test_restart_one_service_on_the_same_ports_and_credentials(tmp_path):
    home = tmp_path / "faults"
    with local_stack.running_stack(home) as info:
        config = Path(info["config"])
        before, settings = local_stack.pids(home), config.read_text()
        kafka, s3, milvus = stack_settings(config)
        store = ObjectStore(s3)
        store.ensure_buckets()
        store.put_bytes(s3.evidence_bucket, "survives.txt", b"on disk", "text/plain")
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        admin.create_topics([NewTopic("vigil-restart-check", 1, 1)])
        admin.close()

        for name in ("kafka", "s3", "milvus"):
            result = local_stack.restart_service(home, name)
            print(f"restart {name}: {result}")
            assert result["stopped"]["how"] == "stopped", result
            now = local_stack.pids(home)
            assert now[name][0] != before[name][0] and not set(now[name]) & set(before[name])
            assert local_stack.status(home)["running"]
        assert config.read_text() == settings  # same ports, same credentials
        assert local_stack.up(home)["services"] == {**info["services"], **{
            name: {**info["services"][name], "pid": local_stack.pids(home)[name][0]} for name in SERVICES}}
        assert ObjectStore(s3).get_bytes(s3.evidence_bucket, "survives.txt") == b"on disk"
        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        assert "vigil-restart-check" not in admin.list_topics()  # memory storage: the fault loses topics
        admin.close()
        wl = Watchlist(milvus.model_copy(update={"collection": "after_restart"}))
        wl.ensure_collection()
        wl.close()
        with pytest.raises(local_stack.StackError, match="no service 'nope'"):
            local_stack.restart_service(home, "nope")
    assert processes_of(home) == []


def test_namespace_launcher_publishes_only_its_port(tmp_path):
    """``python -m localstack.netns``: the server's port reached through the host's loopback, another one not."""
    from localstack.stack import PortAllocator

    allocator = PortAllocator()
    published, private = allocator.take(), allocator.take()
    allocator.release()
    server = ("import http.server, socketserver, threading, sys\n"
              "for port in map(int, sys.argv[1:]):\n"
              "    s = http.server.HTTPServer(('0.0.0.0', port), http.server.SimpleHTTPRequestHandler)\n"
              "    threading.Thread(target=s.serve_forever, daemon=True).start()\n"
              "threading.Event().wait()\n")
    log = open(tmp_path / "netns.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "localstack.netns", f"--publish={published}", "--",
                             sys.executable, "-c", server, str(published), str(private)],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while refused(published) and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "netns.log").read_text()
            time.sleep(0.05)
        assert not refused(published)  # relayed to the server inside
        assert refused(private)  # listening on 0.0.0.0 inside: nowhere outside
    finally:
        proc.terminate()
        assert proc.wait(10) == 128 + 15  # the server got SIGTERM, and the launcher says so
        log.close()
    assert "private network namespace" in (tmp_path / "netns.log").read_text()
