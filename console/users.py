"""Console users: names, roles and argon2 password hashes in one JSON file, readable by its owner only (0600)."""

from __future__ import annotations

import json
import re
import secrets
import threading
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field

from accountability.actors import Role
from runtime.files import write_private
from runtime.settings import ConsoleSettings, vigil_home

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
MIN_PASSWORD = 10


class User(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    roles: list[Role] = Field(min_length=1)
    password_hash: str
    disabled: bool = False

    def has(self, *roles: Role) -> bool:
        return any(role in self.roles for role in roles)


class UserError(ValueError):
    """A user operation was refused; the message says why."""


def state_dir(settings: ConsoleSettings) -> Path:
    """The console's state folder (users, proposals), created owner-only."""
    path = settings.state_dir or vigil_home() / "console"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class UserStore:
    """The users file. Every change rewrites it atomically with mode 0600; reads see other processes' changes."""

    def __init__(self, path: Path):
        self.path = path
        self._hasher = PasswordHasher()
        self._lock = threading.Lock()
        self._dummy = self._hasher.hash(secrets.token_hex(16))  # verified against for unknown names: same cost, no user enumeration

    def _load(self) -> dict[str, User]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {u["name"]: User.model_validate(u) for u in data.get("users", [])}

    def _save(self, users: dict[str, User]) -> None:
        write_private(self.path, json.dumps({"users": [u.model_dump(mode="json") for u in sorted(users.values(), key=lambda u: u.name)]},
                                            indent=1))

    def list(self) -> list[User]:
        return sorted(self._load().values(), key=lambda u: u.name)

    def get(self, name: str) -> User | None:
        return self._load().get(name)

    def add(self, name: str, roles: list[Role], password: str) -> User:
        _check_password(password)
        with self._lock:
            users = self._load()
            if name in users:
                raise UserError(f"user {name!r} exists")
            user = User(name=name, roles=sorted(set(roles), key=list(Role).index), password_hash=self._hasher.hash(password))
            users[name] = user
            self._save(users)
        return user

    def update(self, name: str, *, roles: list[Role] | None = None, password: str | None = None,
               disabled: bool | None = None) -> User:
        with self._lock:
            users = self._load()
            if name not in users:
                raise KeyError(name)
            user = users[name]
            if roles is not None:
                user.roles = sorted(set(roles), key=list(Role).index)
            if password is not None:
                _check_password(password)
                user.password_hash = self._hasher.hash(password)
            if disabled is not None:
                user.disabled = disabled
            users[name] = User.model_validate(user.model_dump())
            self._save(users)
        return users[name]

    def remove(self, name: str) -> None:
        with self._lock:
            users = self._load()
            if users.pop(name, None) is None:
                raise KeyError(name)
            self._save(users)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password is right and the user enabled; None otherwise (in about the same time either way)."""
        user = self._load().get(name)
        try:
            self._hasher.verify(user.password_hash if user else self._dummy, password)
        except (VerificationError, InvalidHashError):
            return None
        return user if user and not user.disabled else None


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters")


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def valid_name(name: str) -> bool:
    return re.fullmatch(NAME_PATTERN, name) is not None
