"""Requests to a registry's API, and what their answers mean for the reconciler.

Every request goes over one aiohttp session. A request the registry answers with a `Bearer`
challenge is sent once more with the token the challenge leads to, and the token a registry
took is remembered per repository (`Side`), so a copy asks for one per end rather than one per
blob. Answers become the project's errors: a registry that cannot answer now (connection,
timeout, 5xx, 429) is RegistryUnavailable, one that refuses or rejects is StalledError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict

from reconciler.adapters.registry.auth import (
    RegistryAuth,
    basic_authorization,
    fetch_token,
    parse_bearer_challenge,
    refused,
)
from reconciler.aio.loopback import is_loopback
from reconciler.errors import RegistryUnavailable, StalledError

# The distribution spec asks registries to take manifests up to 4 MiB; a bigger answer is not
# a manifest this can copy.
MANIFEST_LIMIT = 4 * 1024 * 1024
ERROR_BODY_LIMIT = 4096

# What aiohttp raises when the registry is down, slow or drops the connection. The test suite
# raises one of each through `registry_errors`, so a type added here is a type mapped.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError, OSError)


def registry_url(registry: str) -> str:
    """The base URL of the registry API: HTTPS, except for loopback registries."""
    scheme = "http" if is_loopback(registry) else "https"
    return f"{scheme}://{registry}"


@contextmanager
def registry_errors(registry: str) -> Iterator[None]:
    """Turn transport failures talking to `registry` into RegistryUnavailable."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        # aiohttp's messages name the host and the failure, never a credential.
        detail = str(exc) or type(exc).__name__
        raise RegistryUnavailable(f"registry {registry} unreachable: {detail}") from exc


@dataclass(frozen=True)
class Answer:
    """A registry's answer to one request, its body read up to a bound."""

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


def failed(registry: str, answer: Answer, auth: RegistryAuth | None, what: str) -> Exception:
    """The error for an answer that is not the one `what` needed."""
    status = answer.status
    if status in (401, 403):
        return refused(registry, status)
    detail = _error_detail(answer.body, auth)
    if status == 429 or status >= 500:
        return RegistryUnavailable(f"registry {registry} answered HTTP {status}{detail}")
    return StalledError(f"registry {registry} answered HTTP {status} for {what}{detail}")


@dataclass
class Side:
    """A repository in a registry, and the credentials for it: one end of a copy, or where a
    tag is added.

    `authorization` is what the registry last accepted (Basic, or a token its challenge led
    to), so a copy fetches a token once per side rather than once per blob. `scopes` are asked
    for with every token, so the first one already covers what later requests need.
    """

    registry: str
    repository: str
    auth: RegistryAuth | None
    actions: str
    scopes: tuple[str, ...] = ()
    basic: str | None = field(init=False, repr=False)
    authorization: str | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.basic = basic_authorization(self.auth) if self.auth else None
        self.authorization = self.basic

    @property
    def base(self) -> str:
        return f"{registry_url(self.registry)}/v2/{self.repository}"

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        return headers


class Transport:
    """The HTTP session requests to registries go over, and how long they may take.

    One aiohttp session, created on first use (a session belongs to the running event loop)
    and shared by every app's pass.
    """

    def __init__(self, *, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # A layer may take minutes to move: blob transfers have no deadline, only a bound on
        # how long one may make no progress.
        self.idle = timeout
        self.blob_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout, sock_read=timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def token(
        self,
        registry: str,
        repository: str,
        challenge: Mapping[str, str],
        basic: str | None,
        *,
        actions: str = "pull",
        scopes: Sequence[str] = (),
    ) -> str:
        """The token the registry's challenge leads to (see `auth.fetch_token`)."""
        return await fetch_token(
            self.client(),
            registry=registry,
            repository=repository,
            challenge=challenge,
            basic=basic,
            actions=actions,
            scopes=scopes,
        )

    async def head(self, url: str, *, headers: Mapping[str, str]) -> tuple[int, str]:
        """The status of a HEAD of `url`, and the challenge it came with (or "")."""
        async with self.client().head(url, headers=headers) as response:
            return response.status, response.headers.get("WWW-Authenticate", "")

    async def call(
        self,
        side: Side,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        data: bytes | None = None,
    ) -> Answer:
        """`exchange` for one side of a copy, remembering the token the registry took."""
        answer = await self.exchange(
            method,
            url,
            registry=side.registry,
            repository=side.repository,
            headers=side.headers(headers),
            basic=side.basic,
            actions=side.actions,
            scopes=side.scopes,
            data=data,
        )
        if answer.status != 401:
            side.authorization = answer.authorization
        return answer

    async def exchange(
        self,
        method: str,
        url: str,
        *,
        registry: str,
        repository: str,
        headers: Mapping[str, str],
        basic: str | None,
        actions: str,
        scopes: Sequence[str] = (),
        data: bytes | None = None,
    ) -> Answer:
        """One request, answered once more with a token when the registry challenges it."""
        answer = await self._send(method, url, headers, data)
        bearer = (
            parse_bearer_challenge(answer.headers.get("WWW-Authenticate", ""))
            if answer.status == 401
            else None
        )
        if bearer is None:
            return answer
        token = await self.token(
            registry, repository, bearer, basic, actions=actions, scopes=scopes
        )
        return await self._send(method, url, {**headers, "Authorization": f"Bearer {token}"}, data)

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], data: bytes | None
    ) -> Answer:
        async with self.client().request(method, url, headers=headers, data=data) as response:
            limit = MANIFEST_LIMIT + 1 if response.status == 200 else ERROR_BODY_LIMIT
            # read(n) may return less than is on its way: read until the end or the limit.
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
            return Answer(
                response.status,
                CIMultiDict(response.headers),
                b"".join(chunks),
                headers.get("Authorization"),
            )

    async def close(self) -> None:
        """Close the HTTP session; the next call opens a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None
