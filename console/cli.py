"""``vigil console``: serve the console, or manage its users from the terminal (the first admin, the demo's logins)."""

from __future__ import annotations

import sys

from accountability.actors import Actor
from accountability.audit import AuditLog
from console.users import Role, UserError, UserStore, generate_password, state_dir, valid_name
from runtime.settings import VigilSettings


def serve_command(settings: VigilSettings, host: str | None, port: int | None) -> int:
    from console.app import bind, serve, url_of

    sock = bind(host or settings.console.host, settings.console.port if port is None else port)
    store = UserStore(state_dir(settings.console) / "users.json")
    print(f"Vigil console at {url_of(sock)} ({len(store.list())} user(s) in {store.path}); Ctrl-C stops it", flush=True)
    if not store.list():
        print("no users yet: add an admin with `vigil console user add NAME --role admin`", file=sys.stderr, flush=True)
    try:
        serve(settings, sock)
    except KeyboardInterrupt:  # uvicorn has shut down cleanly by now; Ctrl-C is how it is meant to stop
        print("console stopped", flush=True)
    return 0


def user_command(settings: VigilSettings, actor: Actor, action: str, name: str | None, roles: list[str],
                 password_stdin: bool) -> int:
    """add (prints a generated password unless one is read from stdin), list, remove, passwd; changes are audited first."""
    store = UserStore(state_dir(settings.console) / "users.json")
    if action == "list":
        for user in store.list():
            print(f"{user.name}\t{','.join(r.value for r in user.roles)}\t{'disabled' if user.disabled else 'active'}")
        return 0
    if not name or not valid_name(name):
        print(f"error: give a user name (letters, digits, . _ @ -), got {name!r}", file=sys.stderr)
        return 2
    if action == "add" and not roles:
        print(f"error: give at least one --role ({', '.join(r.value for r in Role)})", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\n") if password_stdin else generate_password()
    with AuditLog(settings, client_id="vigil-console-cli") as audit:
        try:
            if action == "add":
                audit.append(actor, "user", name, "console user added", {"roles": roles})
                store.add(name, [Role(r) for r in roles], password)
            elif action == "passwd":
                audit.append(actor, "user", name, "console user's password set", {"password_changed": True})
                store.update(name, password=password)
            else:
                audit.append(actor, "user", name, "console user removed", {})
                store.remove(name)
        except (UserError, KeyError) as exc:
            print(f"error: {exc if isinstance(exc, UserError) else f'no user {name}'}", file=sys.stderr)
            return 1
    if action in ("add", "passwd") and not password_stdin:
        print(f"{name}\t{password}")
    return 0
