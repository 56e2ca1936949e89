"""Who is calling the admin listener, and whether the request may go on.

A client's address is never an identity. An identity is, in this order:
- `Authorization: Bearer <token>`, a token of the tokens file (or the admin token);
- the session cookie `POST /login` sets after it was given a token: signed by a key of this
  daemon's (`<state_dir>/session.key`), naming the token's hash and an expiry 12 h later, and
  good only while that token is still in the file (revoking a token ends its sessions);
- `X-Forwarded-User` from a peer in `[auth].trusted_proxies`, for a `[[user]]` of the file.

Before that, the `Host` must name the listener itself, `public_url`'s host or an
`[auth].allowed_hosts` entry (421 otherwise: a page on another name resolving to this host,
DNS rebinding, learns nothing); and a state-changing request that carries an `Origin` must
come from this same origin (a cross-site form gets 403).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

from reconciler.aio.loopback import is_loopback
from reconciler.decisions.access import Identity, token_sha256

COOKIE = "reconciler_session"
SESSION_SECONDS = 12 * 3600
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class IdentitySource(Protocol):
    """Where identities come from: the tokens file, or one token in a file of its own."""

    def by_token(self, token: str) -> Identity | None: ...

    def by_hash(self, sha256: str, *, via: str) -> Identity | None: ...

    def user(self, name: str) -> Identity | None: ...


@dataclass(frozen=True)
class Sources:
    """Several sources asked in order (the tokens file or the admin token, and the
    deprecated api_token_file)."""

    sources: Sequence[IdentitySource]

    def by_token(self, token: str) -> Identity | None:
        return next((i for s in self.sources if (i := s.by_token(token)) is not None), None)

    def by_hash(self, sha256: str, *, via: str) -> Identity | None:
        found = (s.by_hash(sha256, via=via) for s in self.sources)
        return next((i for i in found if i is not None), None)

    def user(self, name: str) -> Identity | None:
        return next((i for s in self.sources if (i := s.user(name)) is not None), None)


class Sessions:
    """Session cookies: `<payload>.<signature>`, the payload naming a token's hash and when
    the session ends; nothing is kept on the server, so a restart keeps sessions."""

    def __init__(self, key: bytes, *, lifetime: float = SESSION_SECONDS) -> None:
        self._key = key
        self.lifetime = lifetime

    @classmethod
    def with_key_in(cls, path: Path) -> Sessions:
        """The key in `path` (made once, mode 0600)."""
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(bytes.fromhex(path.read_text(encoding="ascii").strip()))
        key = secrets.token_bytes(32)
        with os.fdopen(descriptor, "w", encoding="ascii") as out:
            out.write(key.hex() + "\n")
        return cls(key)

    def issue(self, token: str, *, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.lifetime)
        payload = _b64(json.dumps({"h": token_sha256(token), "e": expires}).encode())
        return f"{payload}.{self._sign(payload)}"

    def token_hash(self, cookie: str, *, now: float | None = None) -> str | None:
        """The token hash a valid, unexpired cookie names; None for anything else."""
        payload, dot, signature = cookie.partition(".")
        if not dot or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            sha, expires = str(fields["h"]), int(fields["e"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires <= (time.time() if now is None else now):
            return None
        return sha

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, offered = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not offered.strip():
        return None
    return offered.strip()


@dataclass(frozen=True)
class Gate:
    """Identity and the checks made before any handler of the admin listener runs."""

    identities: IdentitySource
    sessions: Sessions
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        *,
        identities: IdentitySource,
        sessions: Sessions,
        trusted_proxies: Iterable[str] = (),
        allowed_hosts: Iterable[str] = (),
    ) -> Gate:
        return cls(
            identities=identities,
            sessions=sessions,
            trusted_proxies=tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies),
            allowed_hosts=frozenset(h.lower() for h in allowed_hosts),
        )

    def identify(self, request: web.Request) -> Identity | None:
        token = _bearer(request.headers.get("Authorization"))
        if token is not None:
            return self.identities.by_token(token)
        cookie = request.cookies.get(COOKIE)
        if cookie:
            sha = self.sessions.token_hash(cookie)
            if sha is not None:
                return self.identities.by_hash(sha, via="session")
        user = request.headers.get("X-Forwarded-User")
        if user and self._from_trusted_proxy(request):
            return self.identities.user(user.strip())
        return None

    def _from_trusted_proxy(self, request: web.Request) -> bool:
        try:
            peer = ipaddress.ip_address((request.remote or "").split("%", 1)[0])
        except ValueError:
            return False
        return any(peer in network for network in self.trusted_proxies)

    def host_allowed(self, request: web.Request, *, listening: str, public_url: str) -> bool:
        """The Host names this listener (its address, or a loopback name when it listens on
        loopback), public_url's host, or an allowed host; with or without the port."""
        host = request.host.lower()
        name = _without_port(host)
        if host in self.allowed_hosts or name in self.allowed_hosts:
            return True
        if public_url and name == _without_port(urlsplit(public_url).netloc.lower()):
            return True
        listening_name = _without_port(listening.lower())
        if name == listening_name:
            return True
        return is_loopback(listening_name) and is_loopback(name)

    def origin_allowed(self, request: web.Request, *, public_url: str) -> bool:
        """A state-changing request from a browser page comes from this origin."""
        if request.method not in UNSAFE_METHODS:
            return True
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser's cross-site request: those always say where from
        origin = origin.lower()
        if public_url:
            parts = urlsplit(public_url)
            if origin == f"{parts.scheme}://{parts.netloc}".lower():
                return True
        return origin == f"{request.scheme}://{request.host}".lower()


def _without_port(host: str) -> str:
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host
