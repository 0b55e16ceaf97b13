"""Who acts: an authenticated actor with roles, and the one check every action makes."""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from enum import Enum


class Role(str, Enum):
    """What a person may do (the console's users hold these). A person may hold several."""

    admin = "admin"  # manages users
    authoriser = "authoriser"  # approves watchlist entries, starts and ends deployments
    enroller = "enroller"  # proposes watchlist entries
    reviewer = "reviewer"  # confirms or rejects alerts
    auditor = "auditor"  # reads and verifies the audit


ROLES = frozenset(role.value for role in Role)


class NotAuthorised(PermissionError):
    """The actor lacks every role the action needs."""


@dataclass(frozen=True)
class Actor:
    """An authenticated person or service. ``name`` goes into every audit event it causes.

    ``via`` says how it was authenticated: ``cli`` (the operating system's login, with the
    services' credentials), ``console`` (a console session), ``service`` (a stage's own
    credentials, for retention).
    """

    name: str
    via: str
    roles: frozenset[str] = frozenset()

    def __post_init__(self):
        if not self.name.strip():
            raise ValueError("an actor needs a name")


def cli_actor() -> Actor:
    """The person at this terminal, as the operating system knows them: ``user@host``. The CLI runs with the
    services' credentials, so its operator holds every role (docs/accountability.md)."""
    return Actor(f"{getpass.getuser()}@{socket.gethostname()}", "cli", ROLES)


def service_actor(stage: str) -> Actor:
    """A stage acting by itself (retention, expiry): no role a person holds."""
    return Actor(f"service:{stage}", "service", frozenset({"service"}))


def require(actor: Actor, *roles: str) -> None:
    """Raise ``NotAuthorised`` unless ``actor`` holds one of ``roles``."""
    if not set(roles) & actor.roles:
        raise NotAuthorised(f"{actor.name} ({actor.via}) needs the role {' or '.join(roles)} for this")
