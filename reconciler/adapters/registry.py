"""Ask the registry an image is pushed to whether a tag already exists.

"The tag exists" is a question for the registry the image is pushed to, through the
OCI distribution API that ECR, the CNCF registry and Docker Hub all serve, never an ECR-only
list. One HEAD of the manifest answers it without downloading anything.

Authentication comes in the two shapes registries use: Basic on every request (ECR), or a
401 with a `Bearer` challenge naming a token service (the CNCF registry with token auth, Docker
Hub and registries modelled on it). The ECR password is secret: it is never part of a
repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from reconciler.errors import RegistryUnavailable, StalledError
from reconciler.loopback import is_loopback

# Everything index, manifest or list: a multi-arch tag answers with an index, and a registry
# that is not told it may accept one answers 404 for a tag that exists.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)

# What aiohttp raises when the registry is down, slow or drops the connection. The test suite
# raises one of each through `registry_errors`, so a type added here is a type mapped.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError, OSError)

_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry: for ECR, user `AWS` and the login token as password."""

    username: str
    password: str = field(repr=False)
    server: str


def registry_url(registry: str) -> str:
    """The base URL of the registry API: HTTPS, except for loopback registries."""
    scheme = "http" if is_loopback(registry) else "https"
    return f"{scheme}://{registry}"


def parse_bearer_challenge(header: str) -> dict[str, str] | None:
    """The parameters of a `WWW-Authenticate: Bearer ...` header, or None for other schemes."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return {m[1].lower(): m[2] or m[3] for m in _CHALLENGE_PARAM.finditer(params)}


@contextmanager
def registry_errors(registry: str) -> Iterator[None]:
    """Turn transport failures talking to `registry` into RegistryUnavailable."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        # aiohttp's messages name the host and the failure, never a credential.
        detail = str(exc) or type(exc).__name__
        raise RegistryUnavailable(f"registry {registry} unreachable: {detail}") from exc


def basic_authorization(auth: RegistryAuth) -> str:
    """The `Authorization` header value for Basic auth (what ECR expects)."""
    pair = f"{auth.username}:{auth.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _refused(registry: str, status: int) -> StalledError:
    return StalledError(f"registry {registry} refused credentials (HTTP {status})")


class Registry:
    """Asks the registry the image is pushed to whether a tag exists.

    One aiohttp session, created on first use (a session belongs to the running event loop)
    and shared by every app's pass.
    """

    def __init__(self, *, timeout: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def has_tag(
        self, *, registry: str, repository: str, tag: str, auth: RegistryAuth | None
    ) -> bool:
        """True when `registry` serves a manifest for `repository:tag`, False on a 404.

        Raises RegistryUnavailable when the registry cannot answer now (connection, timeout,
        5xx, 429) and StalledError when it refuses the credentials.
        """
        url = f"{registry_url(registry)}/v2/{repository}/manifests/{tag}"
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        basic = basic_authorization(auth) if auth else None
        with registry_errors(registry):
            if basic is not None:
                headers["Authorization"] = basic
            status, challenge = await self._head(url, headers=headers)
            bearer = parse_bearer_challenge(challenge) if status == 401 else None
            if bearer is not None:
                # The token service answers for this registry only; retry once with its token.
                token = await self._token(registry, repository, bearer, basic)
                headers["Authorization"] = f"Bearer {token}"
                status, _ = await self._head(url, headers=headers)
        return self._answer(registry, status)

    async def _head(self, url: str, *, headers: Mapping[str, str]) -> tuple[int, str]:
        async with self._client().head(url, headers=headers) as response:
            return response.status, response.headers.get("WWW-Authenticate", "")

    async def _token(
        self,
        registry: str,
        repository: str,
        challenge: Mapping[str, str],
        basic: str | None,
    ) -> str:
        """Fetch a pull token from the realm the registry named in its challenge."""
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
        params = {"scope": challenge.get("scope") or f"repository:{repository}:pull"}
        if challenge.get("service"):
            params["service"] = challenge["service"]
        headers = {"Authorization": basic} if basic else {}
        async with self._client().get(realm, params=params, headers=headers) as response:
            if response.status in (401, 403):
                raise _refused(registry, response.status)
            if response.status != 200:
                raise RegistryUnavailable(
                    f"token service of registry {registry} answered HTTP {response.status}"
                )
            try:
                body = await response.json(content_type=None)
            except ValueError as exc:
                raise RegistryUnavailable(
                    f"token service of registry {registry} sent no JSON"
                ) from exc
        # Docker's token spec says `token`; OAuth2-style services send `access_token`.
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryUnavailable(f"token service of registry {registry} sent no token")
        return token

    @staticmethod
    def _answer(registry: str, status: int) -> bool:
        if status == 200:
            return True
        if status == 404:
            return False
        if status in (401, 403):
            raise _refused(registry, status)
        if status == 429 or status >= 500:
            raise RegistryUnavailable(f"registry {registry} answered HTTP {status}")
        # Any other answer (400 for a malformed name, say) will not change by retrying.
        raise StalledError(f"registry {registry} answered HTTP {status} to a manifest check")

    async def close(self) -> None:
        """Close the HTTP session; the next call opens a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None
