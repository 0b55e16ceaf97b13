"""Run the embedded Milvus server (the ``milvus`` wheel) in the foreground until SIGTERM.

``localstack.stack`` starts this as the local stack's Milvus::

    python -m localstack.milvus_server --base-dir DIR --port proxy=19530 --port etcd=2379 ...

It drives the package's own ``MilvusServer`` (the class behind
``milvus.default_server``) and changes only what several instances on one
machine need:

* every port is given explicitly, including the embedded etcd's client and peer
  ports (fixed at 2379/2380 otherwise, through an etcd config file) and the
  metrics/health port;
* components register with 127.0.0.1 rather than the first network address;
* the pid file is ``/run/milvus/standalone-<alias>.pid`` (or under /tmp/milvus)
  rather than one ``standalone.pid`` shared by every instance;
* the unpacked binaries (246 MB) can live in one shared cache directory;
* shutdown waits for Milvus's graceful stop (~2 s: the lone query node no
  longer waits 30 s for a peer to take its segments) instead of killing it
  after 1 s, then removes the pid and server-id files Milvus leaves behind (it
  panics in its last step, closing the embedded etcd client, harmlessly);
* sessions live 10 s instead of 30 s: Milvus does not revoke them on stop, and a
  restart waits for the old ones to expire (a restart takes ~25 s, a first start ~3 s).

Milvus 2.3.5's gRPC and metrics servers bind every interface whatever the
config says. The stack therefore passes ``--publish``: the launcher binds the
proxy port on the host's 127.0.0.1, moves into a network namespace of its own
with only loopback (``localstack.netns``), starts Milvus there, and relays the
published port to the proxy only once Milvus is healthy and, with ``--auth
--credentials FILE``, root's default password has been replaced by the file's
``milvus_password``. From outside the namespace the default login never works
and no other Milvus or etcd port exists.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from milvus import MilvusServer, MilvusServerConfig, _initialize_data_files

from localstack import netns

# Port names accepted by --port: the template's ``<name>_port`` items plus our own.
TEMPLATE_PORTS = ("proxy", "proxy_internal", "root_coord", "query_coord", "query_node",
                  "index_coord", "index_node", "data_coord", "data_node", "etcd")
PORTS = TEMPLATE_PORTS + ("etcd_peer", "metrics")
COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
LOOPBACK = "127.0.0.1"
RUN_DIRS = (Path("/run/milvus"), Path("/tmp/milvus"))  # fixed in the binary: pid and server-id files
SESSION_TTL_S = 10
GRACEFUL_STOP_S = 20  # Milvus forces its own exit after this
DEFAULT_PASSWORD = "Milvus"  # root's password on a fresh server with authentication on
PASSWORD_TIMEOUT_S = 60.0


class _Terminated(Exception):
    """Raised from the signal handler to leave whatever the main thread is waiting on."""


class StackConfig(MilvusServerConfig):
    """The package's config template, plus items it lacks."""

    ADDED = {
        # The embedded etcd takes its listen URLs only from an etcd config file.
        "etcd": "  config:\n    path: {{ etcd_config_path }}",
        # A lone query node waits this long on SIGTERM for its segments to move elsewhere
        # (30 s by default): there is nowhere to move them to.
        "queryNode": "  gracefulStopTimeout: {{ node_stop_timeout(int): 2 }}",
        "indexNode": "  gracefulStopTimeout: {{ node_stop_timeout(int): 2 }}",
    }

    def load_template(self):
        super().load_template()
        for section, lines in self.ADDED.items():
            head = f"\n{section}:\n"
            if head not in self.template_text:
                raise RuntimeError(f"milvus config template has no {section} section")
            self.template_text = self.template_text.replace(head, f"{head}{lines}\n", 1)


class StackMilvusServer(MilvusServer):
    """``MilvusServer`` with an alias (own pid file), shared binaries and a graceful stop."""

    def __init__(self, config: StackConfig, *, alias: str, bin_root: Path, metrics_port: int,
                 stop_grace_s: float = 30.0):
        super().__init__(config)
        self.alias = alias
        self.bin_root = bin_root
        self.webservice_port = metrics_port
        self.stop_grace_s = stop_grace_s

    def get_milvus_executable_path(self):
        return str(self.bin_root / "bin" / "milvus")

    def _unpack_binaries(self) -> None:
        self.bin_root.mkdir(parents=True, exist_ok=True)
        with open(self.bin_root / ".unpack.lock", "w") as lock:  # several stacks may start at once
            fcntl.flock(lock, fcntl.LOCK_EX)
            _initialize_data_files(str(self.bin_root))

    def start(self):
        # Same steps as MilvusServer.start, with the alias flag and our environment.
        self.config.resolve()
        self._unpack_binaries()
        exe = self.get_milvus_executable_path()
        base = Path(self.config.base_data_dir)
        self.webservice_port, sock = self.config.resolve_port(self.webservice_port)
        sock.close()
        env = dict(os.environ)
        env.update({
            "DEPLOY_MODE": "STANDALONE",
            "METRICS_PORT": str(self.webservice_port),
            "MILVUSCONF": str(base / "configs"),
            "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(Path(exe).parent), env.get("LD_LIBRARY_PATH")])),
        })
        # stdout/stderr are inherited: the stack points ours at logs/milvus.log.
        self.server_proc = subprocess.Popen([exe, "run", "standalone", f"-alias={self.alias}"],
                                            cwd=base, env=env, stdin=subprocess.DEVNULL)
        self.wait_started()

    def stop(self):
        proc, self.server_proc = self.server_proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._remove_run_files(proc.pid)

    def _remove_run_files(self, pid: int) -> None:
        """Milvus 2.3.5 panics at the very end of its shutdown and leaves these behind."""
        for run_dir in RUN_DIRS:
            pid_file = run_dir / f"standalone-{self.alias}.pid"
            try:
                if pid_file.read_text().strip() == str(pid):
                    pid_file.unlink()
            except (OSError, ValueError):
                pass
            (run_dir / f"server_id_{pid}").unlink(missing_ok=True)


def write_etcd_config(path: Path, client_port: int, peer_port: int) -> None:
    client, peer = f"http://{LOOPBACK}:{client_port}", f"http://{LOOPBACK}:{peer_port}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "name: milvus-embedded\n"
        f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: milvus-embedded={peer}\n"
    )


def build_server(base_dir: Path, ports: dict[str, int], *, alias: str, bin_root: Path | None = None,
                 auth: bool = False, log_level: str = "warn", stop_grace_s: float = 30.0) -> StackMilvusServer:
    missing = set(PORTS) - set(ports)
    if missing:
        raise ValueError(f"missing ports: {', '.join(sorted(missing))}")
    base_dir = base_dir.resolve()
    etcd_config = base_dir / "configs" / "etcd.yaml"
    write_etcd_config(etcd_config, ports["etcd"], ports["etcd_peer"])
    config = StackConfig(data_dir=str(base_dir), **{f"{name}_port": ports[name] for name in TEMPLATE_PORTS})
    config.resolve_storage()
    config.set("etcd_config_path", str(etcd_config))
    config.set("authorization_enabled", auth)
    config.set("etcd_log_level", log_level)
    config.set("log.level", log_level)
    # Milvus does not revoke its sessions when it stops: a restart waits for them to expire.
    config.set("common.session.ttl", SESSION_TTL_S)
    config.set("common.gracefulStopTimeout", GRACEFUL_STOP_S)
    for component in COMPONENTS:
        config.set(f"{component}.ip", LOOPBACK)
    return StackMilvusServer(config, alias=alias, bin_root=(bin_root or base_dir).resolve(),
                             metrics_port=ports["metrics"], stop_grace_s=stop_grace_s)


def set_root_password(port: int, password: str, timeout_s: float = PASSWORD_TIMEOUT_S) -> str:
    """Make root's password ``password`` (replacing the default); returns "kept" or "changed"."""
    from pymilvus import MilvusClient

    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # it logs a traceback per refused login
    uri, deadline = f"http://{LOOPBACK}:{port}", time.monotonic() + timeout_s
    while True:
        try:
            MilvusClient(uri, token=f"root:{password}", timeout=5).close()
            return "kept"
        except Exception as ours:  # noqa: BLE001 - a fresh server: try the default login
            try:
                client = MilvusClient(uri, token=f"root:{DEFAULT_PASSWORD}", timeout=5)
                try:
                    client.update_password("root", DEFAULT_PASSWORD, password)
                finally:
                    client.close()
                return "changed"
            except Exception as default:  # noqa: BLE001 - not ready yet, or neither password works
                if time.monotonic() > deadline:
                    raise RuntimeError(f"root's password could not be set: the stack's login failed ({ours!r}) "
                                       f"and so did the default one ({default!r}); was the credentials file "
                                       "replaced while Milvus's data was kept?") from default
        time.sleep(0.5)


def _port(text: str) -> tuple[str, int]:
    name, _, value = text.partition("=")
    if name not in PORTS or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PORT with NAME one of {', '.join(PORTS)}")
    return name, int(value)


# Milvus restarted when it ends by itself, at most this many times within the window.
MAX_RESTARTS = 3
RESTART_WINDOW_S = 600.0


def _start_when_ports_free(server, timeout_s: float = 120.0) -> None:
    """``server.start()``, again while its ports are still held by the last run's closing connections (TIME_WAIT)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            server.start()
            return
        except RuntimeError as exc:
            if "bind failed" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localstack.milvus_server", description=__doc__.split("\n")[0])
    parser.add_argument("--base-dir", type=Path, required=True, help="Config, data and Milvus's own logs.")
    parser.add_argument("--bin-cache", type=Path, help="Where to unpack the binaries (default: the base dir).")
    parser.add_argument("--port", type=_port, action="append", default=[], help="NAME=PORT, once per port.")
    parser.add_argument("--alias", default=None, help="Instance alias (names the pid file); default milvus-<proxy port>.")
    parser.add_argument("--auth", action="store_true", help="Turn authentication on (root's first password is Milvus).")
    parser.add_argument("--credentials", type=Path, help="JSON file whose milvus_password becomes root's password "
                        "(with --auth) before the proxy port is published.")
    parser.add_argument("--publish", action="store_true", help="Run in a network namespace of its own and publish "
                        "only the proxy port, on the host's 127.0.0.1.")
    parser.add_argument("--log-level", default="warn", choices=["debug", "info", "warn", "error"])
    parser.add_argument("--stop-grace", type=float, default=30.0, help="Seconds to wait for a graceful stop.")
    args = parser.parse_args(argv)
    ports = dict(args.port)
    try:
        server = build_server(args.base_dir, ports, alias=args.alias or f"milvus-{ports.get('proxy')}",
                              bin_root=args.bin_cache, auth=args.auth, log_level=args.log_level,
                              stop_grace_s=args.stop_grace)
    except ValueError as exc:
        parser.error(str(exc))
    if args.credentials and not args.auth:
        parser.error("--credentials needs --auth")
    password = json.loads(args.credentials.read_text())["milvus_password"] if args.credentials else None
    listener = None
    if args.publish:
        # Bound (not listening) in the host's namespace, before moving into our own.
        listener = netns.bind_published(ports["proxy"])
        try:
            how = netns.enter_private_network()
        except netns.NamespaceError as exc:
            print(f"localstack.milvus_server: {exc}", file=sys.stderr, flush=True)
            return 2
        print(f"localstack.milvus_server: in a private network namespace ({how})", flush=True)

    def on_signal(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise _Terminated

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rc = 0
    try:
        server.start()
        if password:
            print(f"localstack.milvus_server: root's password {set_root_password(ports['proxy'], password)}", flush=True)
        if listener:
            netns.Relay(listener, ports["proxy"]).start()
        print(f"localstack.milvus_server: Milvus ready on {LOOPBACK}:{ports['proxy']} (pid {server.server_proc.pid})",
              flush=True)
        restarts: list[float] = []
        while True:
            while server.server_proc.poll() is None:
                time.sleep(0.5)
            code = server.server_proc.returncode
            # Milvus ends itself when its sessions lapse (a pause longer than their TTL): start it again, as a pod
            # would be, unless it keeps failing.
            restarts = [t for t in restarts if time.monotonic() - t < RESTART_WINDOW_S] + [time.monotonic()]
            if len(restarts) > MAX_RESTARTS:
                rc = code or 1
                print(f"localstack.milvus_server: Milvus exited with code {code}, {MAX_RESTARTS} restarts in "
                      f"{RESTART_WINDOW_S:.0f} s already: giving up", flush=True)
                break
            print(f"localstack.milvus_server: Milvus exited with code {code}; starting it again", flush=True)
            server.stop()
            _start_when_ports_free(server)
            print(f"localstack.milvus_server: Milvus ready again (pid {server.server_proc.pid})", flush=True)
    except _Terminated:
        print("localstack.milvus_server: stopping Milvus", flush=True)
    except Exception as exc:  # noqa: BLE001 - report and stop whatever started
        print(f"localstack.milvus_server: start-up failed: {exc!r}", file=sys.stderr, flush=True)
        rc = 1
    finally:
        server.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
