"""Ask the registry an image is pushed to whether a tag already exists, and add tags to it.

"The tag exists" is a question for the registry the image is pushed to, through the
OCI distribution API that ECR, the CNCF registry and Docker Hub all serve, never an ECR-only
list. One HEAD of the manifest answers it without downloading anything. A new tag for an
image that is already there is one GET of its manifest and one PUT of the same bytes: no layer
moves, and the digest stays the same because the bytes do.

Authentication comes in the two shapes registries use: Basic on every request (ECR), or a
401 with a `Bearer` challenge naming a token service (the CNCF registry with token auth, Docker
Hub and registries modelled on it). The ECR password is secret: it is never part of a
repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

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

# The distribution spec asks registries to take manifests up to 4 MiB; a bigger answer is not
# a manifest this can copy.
MANIFEST_LIMIT = 4 * 1024 * 1024
ERROR_BODY_LIMIT = 4096

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


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    authorization: str | None  # the Authorization header the request was answered with


def _error_detail(body: bytes, auth: RegistryAuth | None) -> str:
    """The first error of a registry's JSON error body, as ` (CODE: message)`, or ""."""
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        detail = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    detail = " ".join(detail.split())[:200]
    if auth is not None and auth.password and auth.password in detail:
        # The registry writes these messages; whatever it echoes, the password stays out.
        detail = detail.replace(auth.password, "***")
    return f" ({detail})" if detail else ""


def _media_type(answer: _Answer) -> str | None:
    """The manifest's media type: the Content-Type it was served with, else its mediaType."""
    served = answer.headers.get("Content-Type", "").split(";")[0].strip()
    if served in MANIFEST_MEDIA_TYPES:
        return served
    try:
        declared = json.loads(answer.body).get("mediaType")
    except (ValueError, AttributeError):
        return None
    return declared if declared in MANIFEST_MEDIA_TYPES else None


class Registry:
    """Asks the registry the image is pushed to whether a tag exists, and adds tags there.

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

    async def retag(
        self, *, registry: str, repository: str, tag: str, new_tag: str, auth: RegistryAuth | None
    ) -> str:
        """Put the manifest of `repository:tag` under `new_tag` as well; its digest.

        The exact bytes go back with the media type they came with, so the digest under
        `new_tag` is the digest under `tag`, and an index stays an index. Raises StalledError
        when `tag` does not exist or the credentials are refused, RegistryUnavailable when the
        registry cannot answer now.
        """
        base = f"{registry_url(registry)}/v2/{repository}/manifests"
        basic = basic_authorization(auth) if auth else None
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        if basic is not None:
            headers["Authorization"] = basic
        with registry_errors(registry):
            got = await self._exchange(
                "GET",
                f"{base}/{tag}",
                registry=registry,
                repository=repository,
                headers=headers,
                basic=basic,
                actions="pull",
            )
            if got.status == 404:
                raise StalledError(
                    f"registry {registry} has no {repository}:{tag} to tag as {new_tag}"
                )
            if got.status != 200:
                raise self._failed(registry, got, auth, f"the manifest of {repository}:{tag}")
            if len(got.body) > MANIFEST_LIMIT:
                raise StalledError(
                    f"registry {registry} sent a manifest of {repository}:{tag} over 4 MiB"
                )
            media_type = _media_type(got)
            if media_type is None:
                raise StalledError(
                    f"registry {registry} sent {repository}:{tag} as "
                    f"{got.headers.get('Content-Type') or 'no media type'}, which is not an "
                    "image manifest or index that can be tagged by copying"
                )
            put_headers = {"Content-Type": media_type}
            if got.authorization is not None:
                # A pull token may not allow the push; a refusal brings a challenge for one.
                put_headers["Authorization"] = got.authorization
            put = await self._exchange(
                "PUT",
                f"{base}/{new_tag}",
                registry=registry,
                repository=repository,
                headers=put_headers,
                basic=basic,
                actions="pull,push",
                data=got.body,
            )
            if put.status not in (200, 201, 202):
                raise self._failed(registry, put, auth, f"tag {repository}:{new_tag}")
        return (
            put.headers.get("Docker-Content-Digest")
            or got.headers.get("Docker-Content-Digest")
            or "sha256:" + hashlib.sha256(got.body).hexdigest()
        )

    async def _exchange(
        self,
        method: str,
        url: str,
        *,
        registry: str,
        repository: str,
        headers: Mapping[str, str],
        basic: str | None,
        actions: str,
        data: bytes | None = None,
    ) -> _Answer:
        """One request, answered once more with a token when the registry challenges it."""
        answer = await self._send(method, url, headers, data)
        bearer = (
            parse_bearer_challenge(answer.headers.get("WWW-Authenticate", ""))
            if answer.status == 401
            else None
        )
        if bearer is None:
            return answer
        token = await self._token(registry, repository, bearer, basic, actions=actions)
        return await self._send(method, url, {**headers, "Authorization": f"Bearer {token}"}, data)

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], data: bytes | None
    ) -> _Answer:
        async with self._client().request(method, url, headers=headers, data=data) as response:
            limit = MANIFEST_LIMIT + 1 if response.status == 200 else ERROR_BODY_LIMIT
            # read(n) may return less than is on its way: read until the end or the limit.
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
            return _Answer(
                response.status,
                CIMultiDict(response.headers),
                b"".join(chunks),
                headers.get("Authorization"),
            )

    @staticmethod
    def _failed(registry: str, answer: _Answer, auth: RegistryAuth | None, what: str) -> Exception:
        status = answer.status
        if status in (401, 403):
            return _refused(registry, status)
        detail = _error_detail(answer.body, auth)
        if status == 429 or status >= 500:
            return RegistryUnavailable(f"registry {registry} answered HTTP {status}{detail}")
        return StalledError(f"registry {registry} answered HTTP {status} for {what}{detail}")

    async def _head(self, url: str, *, headers: Mapping[str, str]) -> tuple[int, str]:
        async with self._client().head(url, headers=headers) as response:
            return response.status, response.headers.get("WWW-Authenticate", "")

    async def _token(
        self,
        registry: str,
        repository: str,
        challenge: Mapping[str, str],
        basic: str | None,
        *,
        actions: str = "pull",
    ) -> str:
        """Fetch a token from the realm the registry named in its challenge."""
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
        params = {"scope": challenge.get("scope") or f"repository:{repository}:{actions}"}
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
