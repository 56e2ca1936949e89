"""Build and push images through the Docker engine API (aiodocker underneath).

Errors are typed by what the loop should do next (see reconciler.errors): the engine being
down or dropping the connection is DockerUnavailable; a Dockerfile that does not build is
BuildFailed; the registry being down during a push is RegistryUnavailable; the registry
refusing the credentials is StalledError. A build that cannot pull its base image because a
registry is out of reach is RegistryUnavailable too. No aiodocker or aiohttp exception leaves
this module.
"""

from __future__ import annotations

import base64
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import aiohttp
from aiodocker import Docker
from aiodocker.exceptions import DockerError

from reconciler.adapters.registry import RegistryAuth
from reconciler.errors import (
    BuildFailed,
    DockerUnavailable,
    RegistryUnavailable,
    StalledError,
)

LOG_TAIL_LINES = 20

# What aiodocker and aiohttp raise when the engine is missing, slow, or drops a stream half
# way. FileNotFoundError and ConnectionError cover a socket path that vanished under us. The
# test suite raises one of each through `engine_errors`, so a type added here is a type mapped.
ENGINE_ERRORS: tuple[type[Exception], ...] = (
    DockerError,
    aiohttp.ClientError,
    TimeoutError,
    ConnectionError,
    FileNotFoundError,
)

# Short calls (ping, version, delete) must not hang a pass on an engine that accepts the
# connection and never answers. Builds and pushes only bound the connect: a RUN step may be
# silent for many minutes, and cancelling the pass closes the connection, which stops the build.
_SHORT_CALL = aiohttp.ClientTimeout(total=30, sock_connect=10)
_LONG_CALL = aiohttp.ClientTimeout(total=None, sock_connect=10)

_SUCCESSFULLY_BUILT = re.compile(r"Successfully built ([0-9a-f]{12,64})")
_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")
# Registry answers meaning "these credentials are not good enough"; retrying will not help.
_AUTH_REFUSED = re.compile(
    r"denied|unauthorized|authentication required|no basic auth credentials", re.IGNORECASE
)
# ECR's wording for a stale login token: the next pass fetches a fresh one, so it is transient.
_TOKEN_EXPIRED = re.compile(r"token has expired", re.IGNORECASE)
# A build step failing because a registry (pulling FROM) is out of reach, as Go's net/http and
# the distribution client word it. A failing RUN or COPY never reads like this.
_REGISTRY_DOWN = re.compile(
    r"dial tcp|i/o timeout|TLS handshake timeout|connection reset by peer|no such host"
    r"|received unexpected HTTP status: (5\d\d|429)|toomanyrequests",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class BuildResult:
    """A finished build: the image id, the end of its output, and how much came from cache."""

    image_id: str
    log_tail: tuple[str, ...]
    cached_steps: int


def one_line(message: str, *, secret: str | None = None) -> str:
    """`message` on one line, with `secret` (if any) blanked out."""
    if secret:
        message = message.replace(secret, "***")
    return " ".join(message.split())


@contextmanager
def engine_errors(action: str, *, secret: str | None = None) -> Iterator[None]:
    """Turn a failure to talk to the engine during `action` into DockerUnavailable."""
    try:
        yield
    except ENGINE_ERRORS as exc:
        detail = exc.message if isinstance(exc, DockerError) else str(exc)
        detail = one_line(detail or type(exc).__name__, secret=secret)
        raise DockerUnavailable(f"Docker engine unavailable ({action}): {detail}") from exc


def split_image(image: str) -> tuple[str, str]:
    """`<registry>/<repository>:<tag>` as (`<registry>/<repository>`, `<tag>`)."""
    name, colon, tag = image.rpartition(":")
    if not colon or "/" in tag or not name:
        raise ValueError(f"image reference {image!r} has no tag")
    return name, tag


def registry_auth_header(auth: RegistryAuth | None) -> str:
    """The X-Registry-Auth value: base64url JSON credentials, `{}` for anonymous pushes."""
    payload: dict[str, str] = {}
    if auth is not None:
        payload = {
            "username": auth.username,
            "password": auth.password,
            "serveraddress": auth.server,
        }
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


class DockerEngine:
    """The Docker engine: one aiodocker client, created on first use, shared by all apps."""

    def __init__(self, *, url: str | None = None) -> None:
        self._url = url
        self._docker: Docker | None = None

    def _client(self) -> Docker:
        if self._docker is None:
            try:
                self._docker = Docker(url=self._url, timeout=_SHORT_CALL)
            # aiodocker asserts (rather than raises) when no socket is found and url is None.
            except (ValueError, AssertionError) as exc:
                where = self._url or "DOCKER_HOST or the default socket"
                raise DockerUnavailable(f"no usable Docker engine at {where}: {exc}") from exc
        return self._docker

    async def ping(self) -> None:
        """Return when the engine answers; DockerUnavailable otherwise."""
        with engine_errors("ping"):
            await self._client().version()

    async def build(
        self,
        *,
        context: BinaryIO,
        dockerfile: str,
        tag: str,
        build_args: Mapping[str, str],
        target: str,
        labels: Mapping[str, str],
    ) -> BuildResult:
        """Build the uncompressed tar `context` (read from its current position) as `tag`.

        The tar is streamed from the file object, never held in memory. Raises BuildFailed
        (with the last lines of output) when the Dockerfile does not build, DockerUnavailable
        when the engine cannot be reached or drops the build.
        """
        params: dict[str, Any] = {
            "t": tag,
            "dockerfile": dockerfile,
            "buildargs": json.dumps(dict(build_args)),
            "labels": json.dumps(dict(labels)),
            "rm": True,
            "forcerm": True,
            # The classic builder: BuildKit needs a gRPC session over the same API, and its
            # cache report differs. "Using cache" lines are how cached_steps is counted.
            "version": "1",
        }
        if target:
            params["target"] = target
        with engine_errors("build"):
            try:
                async with self._post_stream(
                    "build",
                    params=params,
                    data=context,
                    headers={"Content-Type": "application/x-tar"},
                ) as response:
                    return await _read_build(response, tag=tag)
            except DockerError as exc:
                if not _is_build_problem(exc):
                    raise
                message = one_line(exc.message)
                raise BuildFailed(f"build of {tag} failed: {message}", log_tail=[message]) from exc

    async def push(self, image: str, *, auth: RegistryAuth | None) -> str:
        """Push `<registry>/<repository>:<tag>` and return the manifest digest it got.

        Raises RegistryUnavailable when the registry cannot take the push now, StalledError
        when it refuses the credentials, DockerUnavailable when the engine cannot be reached
        or has no such image. The password never appears in a message.
        """
        name, tag = split_image(image)
        secret = auth.password if auth else None
        with engine_errors(f"push of {image}", secret=secret):
            try:
                async with self._post_stream(
                    f"images/{name}/push",
                    params={"tag": tag},
                    headers={"X-Registry-Auth": registry_auth_header(auth)},
                ) as response:
                    return await _read_push(response, image=image, secret=secret)
            except DockerError as exc:
                if exc.status == 404:
                    raise DockerUnavailable(
                        f"push of {image}: {one_line(exc.message, secret=secret)}"
                    ) from exc
                if exc.status >= 500 and exc.status != 900:
                    # A push failing before the engine wrote any progress comes back as an
                    # HTTP status instead of a stream line; it reads the same either way.
                    raise _push_error(image, exc.message, secret=secret) from exc
                raise

    @asynccontextmanager
    async def _post_stream(
        self,
        path: str,
        *,
        params: Mapping[str, Any],
        headers: Mapping[str, str],
        data: BinaryIO | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST to a progress-stream endpoint; the response is released however reading ends.

        aiodocker's `_query` leaves that to the caller: a stream abandoned on an error would
        hold its connection until garbage collection.
        """
        async with self._client()._query(
            path, "POST", params=dict(params), data=data, headers=headers, timeout=_LONG_CALL
        ) as response:
            try:
                yield response
            except BaseException:
                # Unread progress is left on the wire: the connection cannot be reused.
                response.close()
                raise
            response.release()

    async def close(self) -> None:
        """Close the engine connection; the next call opens a new one."""
        if self._docker is not None:
            docker, self._docker = self._docker, None
            await docker.close()


def _is_build_problem(exc: DockerError) -> bool:
    """True when the engine refused the build because of the Dockerfile or context.

    4xx is a bad Dockerfile or target. The engine also answers 500 for a Dockerfile missing
    from the context; other 5xx (disk full, storage driver) are the engine's own trouble.
    """
    if 400 <= exc.status < 500:
        return True
    return 500 <= exc.status < 600 and "dockerfile" in exc.message.lower()


async def _json_lines(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The engine's JSON progress stream, one object per line, however long the line.

    aiohttp's readline gives up on lines over its buffer limit, and a RUN step may print one.
    A connection dropped mid-stream surfaces as aiohttp.ClientPayloadError, which is mapped.
    """
    pending = b""
    async for chunk in response.content.iter_any():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if item := _decode(line):
                yield item
    if item := _decode(pending):
        yield item


def _decode(line: bytes) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        item = json.loads(line)
    except ValueError:
        return {"stream": line.decode(errors="replace")}
    return item if isinstance(item, dict) else None


def _stream_error(item: Mapping[str, Any]) -> str | None:
    detail = item.get("errorDetail")
    if isinstance(detail, dict) and detail.get("message"):
        return str(detail["message"])
    if item.get("error"):
        return str(item["error"])
    return None


async def _read_build(response: aiohttp.ClientResponse, *, tag: str) -> BuildResult:
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    cached = 0
    image_id = ""
    async for item in _json_lines(response):
        error = _stream_error(item)
        if error is not None:
            lines = error.strip().splitlines() or ["build failed"]
            if _REGISTRY_DOWN.search(error):
                # Pulling the base image failed: the registry is down, the Dockerfile is fine,
                # and this must not count as a failed build of the revision.
                raise RegistryUnavailable(f"build of {tag} could not pull: {one_line(error)}")
            tail.extend(lines)
            raise BuildFailed(f"build of {tag} failed: {lines[0]}", log_tail=list(tail))
        aux = item.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            image_id = aux["ID"]
        for line in str(item.get("stream", "")).splitlines():
            if not line.strip():
                continue
            tail.append(line.rstrip())
            if "Using cache" in line:
                cached += 1
            if not image_id and (found := _SUCCESSFULLY_BUILT.search(line)):
                image_id = found.group(1)
    if not image_id:
        # No error and no image: the engine closed the stream before the build ended.
        raise DockerUnavailable(f"Docker engine ended the build of {tag} without an image")
    return BuildResult(image_id=image_id, log_tail=tuple(tail), cached_steps=cached)


async def _read_push(response: aiohttp.ClientResponse, *, image: str, secret: str | None) -> str:
    digest = ""
    async for item in _json_lines(response):
        error = _stream_error(item)
        if error is not None:
            raise _push_error(image, error, secret=secret)
        aux = item.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
            digest = aux["Digest"]
        elif not digest and (found := _PUSHED_DIGEST.search(str(item.get("status", "")))):
            digest = found.group(1)
    if not digest:
        raise DockerUnavailable(f"Docker engine ended the push of {image} without a digest")
    return digest


def _push_error(image: str, message: str, *, secret: str | None) -> Exception:
    """The project error for a push the engine reported as failed with `message`."""
    text = one_line(message, secret=secret)
    registry = image.split("/", 1)[0]
    if "does not exist locally" in text or "No such image" in text:
        # The image went missing between build and push; the next pass builds it again.
        return DockerUnavailable(f"push of {image}: {text}")
    if _AUTH_REFUSED.search(text) and not _TOKEN_EXPIRED.search(text):
        return StalledError(f"registry {registry} refused the push of {image}: {text}")
    return RegistryUnavailable(f"push of {image} to {registry} failed: {text}")
