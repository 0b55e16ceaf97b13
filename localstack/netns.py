"""Confine a server to a network namespace of its own, published on one host loopback port.

Milvus 2.3.5 binds its gRPC and metrics ports on every interface whatever its
config says, and SeaweedFS's master, volume and filer answer HTTP and gRPC
without credentials. The local stack therefore runs each of them in a new
network namespace whose only interface is its own loopback: nothing in it can
be reached from another host, nor from this one, except through the one port
published here. The launcher:

1. binds the published port on the host's 127.0.0.1 (a socket keeps the
   namespace it was made in) but does not listen yet, so connections are refused;
2. moves itself into a new network namespace (``unshare(CLONE_NEWNET)``; without
   privilege, inside a new user namespace that maps only the caller's own uid)
   and brings its loopback up;
3. starts the server there, waits until it answers on the same port number
   inside, and only then listens and relays each accepted connection to it.

Everything started after step 2 (the server and its children) inherits the
namespace. Without a namespace the launcher fails with ``NamespaceError``:
the stack does not fall back to exposed ports.

As a command (``localstack.stack`` starts SeaweedFS this way)::

    python -m localstack.netns --publish PORT -- COMMAND [ARG ...]

SIGTERM and SIGINT are passed to the server; the launcher exits with its status.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

LOOPBACK = "127.0.0.1"
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
CHUNK = 256 * 1024


class NamespaceError(RuntimeError):
    """No private network namespace could be made."""


def bind_published(port: int) -> socket.socket:
    """The host-side socket of the published port, bound to 127.0.0.1 and not yet listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    return sock


def enter_private_network() -> str:
    """Move this process (single-threaded) into a new network namespace with only loopback up.

    Returns how: ``"netns"`` (privileged) or ``"userns+netns"`` (unprivileged).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    how = "netns"
    if libc.unshare(CLONE_NEWNET) != 0:
        first = ctypes.get_errno()
        if first != errno.EPERM:
            raise NamespaceError(f"unshare(CLONE_NEWNET) failed: {os.strerror(first)}")
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            raise NamespaceError(
                "cannot make a private network namespace: unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN and "
                f"an unprivileged user namespace was refused ({os.strerror(ctypes.get_errno())}); run as root, "
                "or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or "
                "kernel.apparmor_restrict_unprivileged_userns=0)")
        # Map only our own ids, so files keep their owner; setgroups must be denied before gid_map.
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
        how = "userns+netns"
    _loopback_up()
    return how


def _loopback_up() -> None:
    """A new namespace's loopback is down: SIOCSIFFLAGS with IFF_UP, as ``ip link set lo up`` does."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


class Relay:
    """Accepts on the host-side ``listener`` and connects each client to ``port`` in this namespace."""

    def __init__(self, listener: socket.socket, port: int):
        self.listener, self.port = listener, port

    def start(self) -> None:
        self.listener.listen(128)
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def _accept(self) -> None:
        # Signals go to the main thread only (this thread's mask is inherited by the connection threads):
        # one delivered here would leave the main thread blocked in wait() and the server never told.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection((LOOPBACK, self.port), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        client.close()
        upstream.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy until EOF or an error, then pass the end on (half-close) so the other direction can finish."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        while n := src.recv_into(buf):
            dst.sendall(view[:n])
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
    with contextlib.suppress(OSError):
        src.shutdown(socket.SHUT_RD)


def forward_signals(proc: subprocess.Popen) -> None:
    """Pass SIGTERM and SIGINT on to ``proc`` (the launcher exits when it does)."""

    def handler(signum, frame):
        print(f"localstack.netns: passing {signal.Signals(signum).name} on to pid {proc.pid}", flush=True)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localstack.netns", description=__doc__.split("\n")[0])
    parser.add_argument("--publish", type=int, required=True, help="Port published on the host's 127.0.0.1 "
                        "and relayed to the same port inside.")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    listener = bind_published(args.publish)
    try:
        how = enter_private_network()
    except NamespaceError as exc:
        print(f"localstack.netns: {exc}", file=sys.stderr, flush=True)
        return 2
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    forward_signals(proc)
    deadline = time.monotonic() + args.ready_timeout
    while proc.poll() is None and not port_open(args.publish):
        if time.monotonic() > deadline:
            print(f"localstack.netns: nothing answers on port {args.publish} after {args.ready_timeout:.0f} s",
                  file=sys.stderr, flush=True)
            proc.terminate()
            break
        time.sleep(0.05)
    if proc.poll() is None:
        Relay(listener, args.publish).start()
        print(f"localstack.netns: {command[0].rsplit('/', 1)[-1]} (pid {proc.pid}) in a private network "
              f"namespace ({how}), published on {LOOPBACK}:{args.publish}", flush=True)
    rc = proc.wait()
    print(f"localstack.netns: {command[0].rsplit('/', 1)[-1]} exited with "
          f"{'signal ' + signal.Signals(-rc).name if rc < 0 else 'code ' + str(rc)}", flush=True)
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    sys.exit(main())
