"""Who may ask a registry: credentials, and the two shapes registries ask for them in.

Basic on every request (ECR), or a 401 with a `Bearer` challenge naming a token service (the
CNCF registry with token auth, Docker Hub and registries modelled on it), which hands out a
token for the repository. The ECR password is secret: it is never part of a repr, a log line
or an error message, and it goes to a token service only encrypted.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from reconciler.aio.loopback import is_loopback
from reconciler.errors import RegistryUnavailable, StalledError

_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry: for ECR, user `AWS` and the login token as password."""

    username: str
    password: str = field(repr=False)
    server: str


def parse_bearer_challenge(header: str) -> dict[str, str] | None:
    """The parameters of a `WWW-Authenticate: Bearer ...` header, or None for other schemes."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return {m[1].lower(): m[2] or m[3] for m in _CHALLENGE_PARAM.finditer(params)}


def basic_authorization(auth: RegistryAuth) -> str:
    """The `Authorization` header value for Basic auth (what ECR expects)."""
    pair = f"{auth.username}:{auth.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def refused(registry: str, status: int) -> StalledError:
    """The error for a registry (or its token service) that will not take the credentials."""
    return StalledError(f"registry {registry} refused credentials (HTTP {status})")


async def fetch_token(
    session: aiohttp.ClientSession,
    *,
    registry: str,
    repository: str,
    challenge: Mapping[str, str],
    basic: str | None,
    actions: str = "pull",
    scopes: Sequence[str] = (),
) -> str:
    """Fetch a token from the realm the registry named in its challenge.

    `scopes` are asked for besides the challenge's, so that one token serves the requests
    that follow (the pushes of a copy after its first check).
    """
    realm = challenge.get("realm", "")
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryUnavailable(f"registry {registry} sent an unusable token realm")
    if basic is not None and parts.scheme == "http" and not is_loopback(parts.netloc):
        # The realm is chosen by whoever answers; the password only travels encrypted.
        raise StalledError(
            f"registry {registry} asks for credentials at a plain-HTTP token service "
            f"({parts.hostname}); refusing to send them"
        )
    named = challenge.get("scope") or f"repository:{repository}:{actions}"
    params = [("scope", scope) for scope in dict.fromkeys((named, *scopes))]
    if challenge.get("service"):
        params.append(("service", challenge["service"]))
    headers = {"Authorization": basic} if basic else {}
    async with session.get(realm, params=params, headers=headers) as response:
        if response.status in (401, 403):
            raise refused(registry, response.status)
        if response.status != 200:
            raise RegistryUnavailable(
                f"token service of registry {registry} answered HTTP {response.status}"
            )
        try:
            body = await response.json(content_type=None)
        except ValueError as exc:
            raise RegistryUnavailable(f"token service of registry {registry} sent no JSON") from exc
    # Docker's token spec says `token`; OAuth2-style services send `access_token`.
    token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryUnavailable(f"token service of registry {registry} sent no token")
    return token
