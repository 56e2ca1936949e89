"""Build, test and push images through the Docker engine (aiodocker underneath).

Builds take one of two builders: BuildKit, through the Docker CLI (see buildkit.py), for cache
mounts and the rest of today's Dockerfile syntax; or the engine API's classic builder, which
needs nothing but the engine. Test commands run in a container of the built
image through the engine API.

Errors are typed by what the loop should do next (see reconciler.errors): the engine being
down or dropping the connection is DockerUnavailable; a Dockerfile that does not build is
BuildFailed; the registry being down during a push is RegistryUnavailable; the registry
refusing the credentials is StalledError. A build that cannot pull its base image because a
registry is out of reach is RegistryUnavailable too. A test run of an image that is not there
is BuildFailed: the build did not produce what it should have. No aiodocker or aiohttp
exception leaves this module.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import structlog
from aiodocker import Docker
from aiodocker.exceptions import DockerError

from reconciler.adapters import buildkit
from reconciler.adapters.containers import run_container
from reconciler.adapters.engine_api import LOG_TAIL_LINES, engine_errors, one_line
from reconciler.adapters.registry import RegistryAuth
from reconciler.adapters.values import BuildRequest, ContainerRun
from reconciler.decisions.local_images import LocalImage
from reconciler.decisions.model import TestRun
from reconciler.errors import (
    BuildFailed,
    DockerUnavailable,
    RegistryUnavailable,
    StalledError,
)

log = structlog.get_logger("reconciler.docker")
BUILDERS = ("auto", "buildkit", "classic")
# What a build's RUN steps may be attached to: "" leaves it to the engine. BuildKit takes
# nothing else; the classic builder would take a network's name too, but one setting must
# mean the same to both.
BUILD_NETWORKS = ("", "default", "host", "none")


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


class SecretsNeedBuildKit(StalledError):
    """A build with secrets on an engine that builds with the classic builder, which cannot
    mount them: the config or the host must change."""


@dataclass(frozen=True)
class BuildResult:
    """A finished build: the image id, the end of its output, and how much came from cache."""

    image_id: str
    log_tail: tuple[str, ...]
    cached_steps: int


def split_image(image: str) -> tuple[str, str]:
    """`<registry>/<repository>:<tag>` as (`<registry>/<repository>`, `<tag>`)."""
    name, colon, tag = image.rpartition(":")
    if not colon or "/" in tag or not name:
        raise ValueError(f"image reference {image!r} has no tag")
    return name, tag


def tls_context(tls: buildkit.EngineTls) -> ssl.SSLContext:
    """The check `docker --tlsverify` makes: the engine's certificate signed by the CA and
    naming the host (or IP) dialled; this client's certificate presented.

    StalledError when the files cannot be read or do not fit together: a human must fix them.
    """
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
        context.load_cert_chain(certfile=tls.cert_file, keyfile=tls.key_file)
    except OSError as exc:  # ssl.SSLError included: a key that does not match the cert
        raise StalledError(
            f"TLS files for the Docker engine cannot be used ({tls.ca_file}, {tls.cert_file},"
            f" {tls.key_file}): {one_line(str(exc))}"
        ) from exc
    return context


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
    """The Docker engine: one aiodocker client, created on first use, shared by all apps.

    `builder` is "buildkit" (through the Docker CLI; StalledError when there is no CLI that
    can), "classic" (the engine API's own builder), or "auto": BuildKit when a CLI that can is
    on PATH, else classic. The default stays "classic" so that a caller that does not choose
    gets the builder it always had; the config's default is "auto". `network` is what RUN
    steps are attached to: "" for the engine's default, else "default", "host" or "none".
    `tls` is for a tcp:// engine started with --tlsverify: the engine API and the CLI both
    check its certificate and present the client's. A build running longer than
    `build_timeout` seconds (None: no limit, what a caller that does not choose always had)
    is stopped and is BuildFailed.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        builder: str = "classic",
        network: str = "",
        tls: buildkit.EngineTls | None = None,
        build_timeout: float | None = None,
    ) -> None:
        if builder not in BUILDERS:
            raise ValueError(f"builder must be one of {', '.join(BUILDERS)}, not {builder!r}")
        if network not in BUILD_NETWORKS:
            raise ValueError(f"build network must be one of {BUILD_NETWORKS}, not {network!r}")
        if tls is not None and not (url or "").startswith("tcp://"):
            raise ValueError(f"TLS client certificates are for tcp:// engines, not {url!r}")
        self._url = url
        self._tls = tls
        self._builder = builder
        self._network = network
        self._build_timeout = build_timeout
        self._fallback_network: str | None = None
        self._docker: Docker | None = None
        # The CLI BuildKit builds run through, found on the first build that wants one.
        self._cli: buildkit.DockerCli | None = None
        self._cli_searched = False
        self._cli_lock = asyncio.Lock()

    def _client(self) -> Docker:
        if self._docker is None:
            self._docker = self._connect()
        return self._docker

    def _connect(self) -> Docker:
        if self._tls is not None and self._url:
            # aiodocker speaks TLS only to an https:// URL; to a tcp:// one it speaks plain HTTP.
            return Docker(
                url="https://" + self._url.removeprefix("tcp://"),
                timeout=_SHORT_CALL,
                ssl_context=tls_context(self._tls),
            )
        try:
            return Docker(url=self._url, timeout=_SHORT_CALL)
        # aiodocker asserts (rather than raises) when no socket is found and url is None.
        except (ValueError, AssertionError) as exc:
            where = self._url or "DOCKER_HOST or the default socket"
            raise DockerUnavailable(f"no usable Docker engine at {where}: {exc}") from exc

    async def ping(self) -> None:
        """Return when the engine answers; DockerUnavailable otherwise."""
        with engine_errors("ping"):
            await self._client().version()

    async def build(
        self,
        context: BinaryIO,
        request: BuildRequest,
        *,
        on_first_step: Callable[[], None] | None = None,
    ) -> BuildResult:
        """Build the uncompressed tar `context` (read from its current position) as
        `request.tag`. With BuildKit, `on_first_step` is called when the build's first
        Dockerfile step past FROM starts (see ports.DockerPort.build); the classic builder
        shares no step between builds and never calls it.

        With BuildKit, images in `request.cache_from` (pulled with `request.cache_auth`) serve
        as build cache, so a host that never built the app reuses what another host pushed.

        The tar is streamed from the file object, never held in memory. Raises BuildFailed
        (with the last lines of output) when the Dockerfile does not build, DockerUnavailable
        when the engine cannot be reached or drops the build, RegistryUnavailable when a base
        image cannot be pulled for now, StalledError when builder = "buildkit" finds no CLI.
        A build stopped at the engine's build timeout is BuildFailed too. `request.secrets`
        are mounted by BuildKit only: with the classic builder such a build is refused
        (SecretsNeedBuildKit) before the context is read.
        """
        cli = await self._buildkit_cli()
        if cli is not None:
            return await self._build_with_cli(
                context, request, cli=cli, on_first_step=on_first_step
            )
        if request.secrets:
            raise SecretsNeedBuildKit(
                f"build_secrets ({', '.join(sorted(request.secrets))}) need BuildKit, and "
                f"{self._classic_because()}"
            )
        return await self._build_classic(context, request)

    def _classic_because(self) -> str:
        if self._builder == "classic":
            return 'builds use the classic builder ([build].builder = "classic")'
        return (
            "no docker CLI on PATH builds with BuildKit (before release 23, or with the buildx"
            ' plugin), so builds use the classic builder ([build].builder = "auto")'
        )

    async def builder(self) -> str:
        """The builder builds use: "buildkit" or "classic" ("auto" decided)."""
        return "buildkit" if await self._buildkit_cli() is not None else "classic"

    async def _buildkit_cli(self) -> buildkit.DockerCli | None:
        """The CLI to build with, or None for the classic builder."""
        if self._builder == "classic":
            return None
        async with self._cli_lock:
            if not self._cli_searched:
                self._cli = await buildkit.find_cli()
                self._cli_searched = True
        if self._cli is None and self._builder == "buildkit":
            raise StalledError(
                'builder = "buildkit" needs the docker CLI on PATH (before release 23, or'
                " with the buildx plugin); none found"
            )
        return self._cli

    async def _default_build_network(self) -> str:
        """ "" (the engine's default, its bridge) where the engine has a bridge network, else
        "host": BuildKit's RUN steps fail on an engine started without one, where the classic
        builder ran them anyway. Asked once per engine; logged when it matters."""
        if self._fallback_network is None:
            with engine_errors("list networks"):
                networks = await self._client().networks.list()
            names = {str(n.get("Name")) for n in networks}
            self._fallback_network = "" if "bridge" in names else "host"
            if self._fallback_network:
                log.warning(
                    "engine_has_no_bridge_network",
                    build_network="host",
                    hint="set [build].network to choose",
                )
        return self._fallback_network

    async def _build_with_cli(
        self,
        context: BinaryIO,
        request: BuildRequest,
        *,
        cli: buildkit.DockerCli,
        on_first_step: Callable[[], None] | None,
    ) -> BuildResult:
        with tempfile.TemporaryDirectory(prefix="reconciler-build-") as scratch:
            iidfile = Path(scratch, "iid")
            docker_config = (
                _docker_config(scratch, request.cache_auth) if request.cache_from else None
            )
            # Only secrets the environment cannot carry; removed with `scratch` right after.
            secret_files = buildkit.write_secret_files(scratch, request.secrets)
            argv, env = buildkit.command(
                cli,
                request,
                url=self._url,
                network=self._network or await self._default_build_network(),
                iidfile=str(iidfile),
                docker_config=docker_config,
                tls=self._tls,
                secret_files=secret_files,
            )
            progress = buildkit.PlainProgress(
                tail_lines=LOG_TAIL_LINES, on_first_step=on_first_step
            )
            ended = await buildkit.run(
                argv, env=env, context=context, progress=progress, time_limit=self._build_timeout
            )
            if ended.timed_out:
                raise self._timed_out(progress.failure_tail())
            if ended.returncode != 0:
                raise _buildkit_failure(request.tag, ended, cli=cli)
            image_id = _read_image_id(iidfile)
        if not image_id:
            raise DockerUnavailable(f"docker CLI ended the build of {request.tag} without an image")
        return BuildResult(
            image_id=image_id,
            log_tail=tuple(progress.tail),
            cached_steps=progress.cached_steps,
        )

    async def _build_classic(self, context: BinaryIO, request: BuildRequest) -> BuildResult:
        tag = request.tag
        params: dict[str, Any] = {
            "t": tag,
            "dockerfile": request.dockerfile,
            "buildargs": json.dumps(dict(request.build_args)),
            "labels": json.dumps(dict(request.labels)),
            "rm": True,
            "forcerm": True,
            # The classic builder: BuildKit needs a gRPC session over the same API, and its
            # cache report differs. "Using cache" lines are how cached_steps is counted.
            "version": "1",
        }
        if request.target:
            params["target"] = request.target
        if self._network:
            params["networkmode"] = self._network
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        try:
            # Past the timeout the build's stream is closed unread, and the engine cancels a
            # build whose client went away: it kills the step's container and removes it.
            async with asyncio.timeout(self._build_timeout) as deadline:
                with engine_errors("build"):
                    try:
                        async with self._post_stream(
                            "build",
                            params=params,
                            data=context,
                            headers={"Content-Type": "application/x-tar"},
                        ) as response:
                            return await _read_build(response, tag=tag, tail=tail)
                    except DockerError as exc:
                        if not _is_build_problem(exc):
                            raise
                        message = one_line(exc.message)
                        raise BuildFailed(
                            f"build of {tag} failed: {message}", log_tail=[message]
                        ) from exc
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise self._timed_out(list(tail)) from exc

    def _timed_out(self, tail: list[str]) -> BuildFailed:
        """The failure of a build stopped at the build timeout."""
        assert self._build_timeout is not None
        span = _seconds_text(self._build_timeout)
        return BuildFailed(f"build stopped after {span} (build.timeout)", log_tail=tail)

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

    async def tag(self, image: str, new: str) -> None:
        """Tag the local image `image` as `new` too. DockerUnavailable when the engine cannot
        be reached or has no such image (the next pass builds it again)."""
        repository, tag = split_image(new)
        with engine_errors(f"tag of {image} as {new}"):
            await self._client().images.tag(image, repository, tag=tag)

    async def local_images(self, *, label: str) -> list[LocalImage]:
        """The images carrying `label` (`key=value`); DockerUnavailable when the engine
        cannot be reached."""
        with engine_errors("list images"):
            listed = await self._client().images.list(filters={"label": [label]})
        return [
            LocalImage(
                image_id=str(image.get("Id") or ""),
                tags=tuple(str(t) for t in image.get("RepoTags") or () if t != "<none>:<none>"),
            )
            for image in listed
        ]

    async def remove_image(self, tag: str) -> None:
        """Untag `tag` (the engine deletes the image and its unused layers with its last
        tag). A tag that is not there is fine; an image a container still uses stays, and
        that is DockerUnavailable like the engine being away."""
        with engine_errors(f"removal of {tag}"):
            try:
                await self._client().images.delete(tag)
            except DockerError as exc:
                if exc.status != 404:
                    raise

    async def run(self, request: ContainerRun, *, on_line: Callable[[str], None]) -> TestRun:
        """Run `request.command` in a new container of its image until it exits or its timeout
        passes.

            Each line of its stdout and stderr goes to `on_line` as it comes, cut at
            buildkit.LINE_CAP characters; only the last lines are kept, for the TestRun's tail.
            At the timeout the container is killed (exit_code None, timed_out True). The container
            is removed however this ends, cancellation included. Raises BuildFailed when `image`
            does not exist, DockerUnavailable when the engine cannot be reached.
        """
        return await run_container(self._client(), request, on_line=on_line)

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


def _buildkit_failure(tag: str, ended: buildkit.CliExit, *, cli: buildkit.DockerCli) -> Exception:
    """The project error for a BuildKit build whose CLI exited non-zero."""
    progress = ended.progress
    final = one_line(progress.final or "no output")
    if ended.returncode < 0:
        # Killed by a signal nobody here sent (the OOM killer, an operator): not the
        # Dockerfile's fault.
        return DockerUnavailable(
            f"docker CLI was killed (signal {-ended.returncode}) during the build of {tag}"
        )
    if progress.failed is not None:
        step, error, _ = progress.failed
        error = one_line(error)
        if progress.failed_is_pull and _REGISTRY_DOWN.search(error):
            # As with the classic builder: the registry is down, the Dockerfile is fine.
            return RegistryUnavailable(f"build of {tag} could not pull: {step}: {error}")
        if progress.failed_is_context_upload:
            return DockerUnavailable(
                f"the engine did not get the build context of {tag}: {step}: {error}"
            )
        if buildkit.ENGINE_UNREACHABLE.search(final):
            return DockerUnavailable(f"Docker engine went away during the build of {tag}: {final}")
        return BuildFailed(
            f"build of {tag} failed: {step}: {error}", log_tail=progress.failure_tail()
        )
    # No step failed. The CLI refusing its command line is told apart in the CLI's own lines
    # only: output of a step (in the tail as `#N ...`) may say anything.
    said = [line for line in progress.tail if not line.startswith("#")]
    refusal = next((line for line in said if buildkit.CLI_REFUSED.search(line)), None)
    if refusal is not None:
        return StalledError(
            f"docker CLI {cli.path} ({cli.version}) refused the build: {one_line(refusal)}"
        )
    if buildkit.ENGINE_UNREACHABLE.search(final):
        return DockerUnavailable(f"Docker engine unavailable (build of {tag}): {final}")
    if _REGISTRY_DOWN.search(final):
        return RegistryUnavailable(f"build of {tag} could not pull: {final}")
    if final.startswith("Error response from daemon:") and "dockerfile" not in final.lower():
        # The engine refused the build request itself (disk full, shutting down): as with a
        # 5xx from the classic builder, that is the engine's trouble, not the Dockerfile's.
        return DockerUnavailable(f"Docker engine refused the build of {tag}: {final}")
    # What is left is the Dockerfile frontend refusing the Dockerfile before any step ran: a
    # parse error, an unknown target, a Dockerfile missing from the context.
    return BuildFailed(f"build of {tag} failed: {final}", log_tail=progress.failure_tail())


def _seconds_text(seconds: float) -> str:
    """A duration as the config writes it: `5s`, `30m`, `1h30m`, `2.5s`."""
    whole = round(seconds)
    if whole < 1 or abs(seconds - whole) > 1e-6:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)


def _read_image_id(iidfile: Path) -> str:
    """The image id the CLI wrote to its --iidfile; "" when it wrote none."""
    try:
        return iidfile.read_text().strip()
    except FileNotFoundError:
        return ""


def _docker_config(scratch: str, auth: RegistryAuth | None) -> str | None:
    """A private DOCKER_CONFIG for one build, holding only the cache registry's credentials
    (in the build's own temporary directory, readable by this user alone)."""
    if auth is None:
        return None
    directory = Path(scratch, "docker-config")
    directory.mkdir(mode=0o700)
    token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
    config = {"auths": {auth.server: {"auth": token}}}
    path = directory / "config.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(config))
    return str(directory)


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


async def _read_build(
    response: aiohttp.ClientResponse, *, tag: str, tail: deque[str]
) -> BuildResult:
    """The build's outcome from its progress stream; its last lines are kept in `tail`."""
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
        for raw in str(item.get("stream", "")).splitlines():
            line = buildkit.shown(raw)
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
