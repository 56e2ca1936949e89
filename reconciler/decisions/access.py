"""Who may do what: identities, roles and the apps their globs name.

A client's address is never an identity (a TLS proxy on the same host makes every client
loopback); an identity comes from a token, a session made from a token, or a trusted proxy's
`X-Forwarded-User`. Roles grow: a viewer reads, an operator also steers, an admin also runs
cleanup and overrides freezes, and acts on every app.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

__all__ = [
    "Action",
    "Identity",
    "Role",
    "Verdict",
    "decide",
    "matches_hash",
    "sees",
    "token_sha256",
    "visible",
]


class Role(enum.IntEnum):
    """Ordered: each role may do what the ones below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def named(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            known = ", ".join(r.name.lower() for r in cls)
            raise ValueError(f"unknown role {name!r} (one of {known})") from None

    def __str__(self) -> str:
        return self.name.lower()


class Action(enum.Enum):
    """What a request does, and the least role that may do it."""

    READ = ("read", Role.VIEWER)  # status, pages, events, history, audit, metrics
    SYNC = ("sync", Role.OPERATOR)
    ROLLBACK = ("rollback", Role.OPERATOR)
    UNPIN = ("unpin", Role.OPERATOR)
    APPROVE = ("approve", Role.OPERATOR)
    REJECT = ("reject", Role.OPERATOR)
    CLEANUP = ("cleanup", Role.ADMIN)
    OVERRIDE_FREEZE = ("override_freeze", Role.ADMIN)

    def __init__(self, label: str, least: Role) -> None:
        self.label = label
        self.least = least

    @property
    def changes_state(self) -> bool:
        return self is not Action.READ


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role
    apps: tuple[str, ...] = ("*",)  # globs over app names
    via: str = "token"  # token | session | proxy


class Verdict(enum.Enum):
    ALLOWED = 200
    NO_IDENTITY = 401
    FORBIDDEN = 403  # the identity sees the app but its role lacks the action
    HIDDEN = 404  # the app is outside the identity's globs: as if it did not exist


def sees(identity: Identity, app: str) -> bool:
    """Whether `app` exists for `identity`: an admin sees every app, others their globs'."""
    if identity.role is Role.ADMIN:
        return True
    return any(fnmatchcase(app, glob) for glob in identity.apps)


def decide(identity: Identity | None, action: Action, app: str | None = None) -> Verdict:
    """May `identity` do `action` (to `app`, when the action is about one app)?"""
    if identity is None:
        return Verdict.NO_IDENTITY
    if app is not None and not sees(identity, app):
        return Verdict.HIDDEN
    if identity.role < action.least:
        return Verdict.FORBIDDEN
    return Verdict.ALLOWED


def visible(identity: Identity, apps: Iterable[str]) -> list[str]:
    """The apps of `apps` that exist for `identity`, in their order."""
    return [app for app in apps if sees(identity, app)]


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def matches_hash(token: str, hashes: Sequence[str]) -> int | None:
    """The index of the stored hash `token` hashes to, compared in constant time, or None."""
    digest = token_sha256(token)
    found: int | None = None
    for index, stored in enumerate(hashes):
        if hmac.compare_digest(digest, stored.lower()) and found is None:
            found = index
    return found
