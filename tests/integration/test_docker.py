"""The Docker engine adapter: build, push, and the errors the loop acts on.

Builds and pushes run against the real engine and the local registry. Failures that the real
engine only produces slowly or by breaking it (a registry refusing credentials after the
engine's own retries, a stream cut half way) come from a small fake engine on a Unix socket.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import pytest
from aiodocker.exceptions import DockerError, DockerStreamError
from aiohttp import web

from reconciler.adapters.docker import BuildResult, DockerEngine, split_image
from reconciler.adapters.engine_api import ENGINE_ERRORS, engine_errors
from reconciler.adapters.engines import EnginePool
from reconciler.adapters.registry import Registry, RegistryAuth
from reconciler.adapters.values import BuildRequest
from reconciler.errors import (
    BuildFailed,
    DockerUnavailable,
    RegistryUnavailable,
    StalledError,
)
from tests.support.net import free_port
from tests.support.probes import eventually
from tests.support.processes import running_as, started_by

PASSWORD = "ecr-password-" + uuid.uuid4().hex
REVISION = "0123456789abcdef0123456789abcdef01234567"

MULTI_STAGE = b"""\
FROM scratch AS app
ARG GREETING=unset
LABEL greeting=$GREETING
COPY hello.txt /hello.txt

FROM app AS debug
COPY hello.txt /debug.txt
LABEL stage=debug
"""


def tar_context(tmp_path: Path, files: dict[str, bytes]) -> BinaryIO:
    """The build context as an uncompressed tar file, opened for reading like the loop does."""
    path = tmp_path / f"context-{uuid.uuid4().hex}.tar"
    with tarfile.open(path, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path.open("rb")


def inspect(image: str) -> dict[str, Any]:
    out = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, check=True, text=True
    )
    return dict(json.loads(out.stdout)[0])


def remove_image(image: str) -> None:
    """Clean up a test image; it may already be gone."""
    subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, check=False)


@pytest.fixture
async def engine(docker_engine: str) -> AsyncIterator[DockerEngine]:
    client = DockerEngine(url=docker_engine)
    yield client
    await client.close()


@pytest.fixture
def image_name(registry: str) -> Iterator[str]:
    """A unique image name in the local registry; removed from the engine afterwards."""
    name = f"{registry}/reconciler-test/{uuid.uuid4().hex[:12]}:{REVISION}"
    yield name
    subprocess.run(["docker", "image", "rm", "-f", name], capture_output=True, check=False)


async def build_scratch(engine: DockerEngine, tmp_path: Path, tag: str) -> None:
    with tar_context(tmp_path, {"Dockerfile": b"FROM scratch\nCOPY f /f\n", "f": b"x"}) as ctx:
        await engine.build(
            ctx, BuildRequest(dockerfile="Dockerfile", tag=tag, build_args={}, target="", labels={})
        )


async def test_build_stops_at_target_with_labels_and_build_args(
    engine: DockerEngine, image_name: str, tmp_path: Path
) -> None:
    """The image is the target stage, carries the OCI labels and sees the build arg."""
    labels = {
        "org.opencontainers.image.revision": REVISION,
        "org.opencontainers.image.source": "https://example.com/acme/web.git",
    }
    with tar_context(tmp_path, {"build/Dockerfile": MULTI_STAGE, "hello.txt": b"hi"}) as ctx:
        result = await engine.build(
            ctx,
            BuildRequest(
                dockerfile="build/Dockerfile",
                tag=image_name,
                build_args={"GREETING": "hello"},
                target="app",
                labels=labels,
            ),
        )
    built = inspect(image_name)
    assert built["Id"] == result.image_id
    image_labels = built["Config"]["Labels"]
    assert image_labels["org.opencontainers.image.revision"] == REVISION
    source = labels["org.opencontainers.image.source"]
    assert image_labels["org.opencontainers.image.source"] == source
    assert image_labels["greeting"] == "hello"
    assert "stage" not in image_labels  # the debug stage after the target was not built
    assert any("Successfully tagged" in line for line in result.log_tail)


@pytest.mark.parametrize(
    ("dockerfile", "error"),
    [
        # Rejected by the engine before the build starts (HTTP 400).
        (b"FORM scratch\n", "unknown instruction: FORM"),
        # Fails at a step, reported inside the progress stream.
        (b"FROM scratch\nCOPY missing.txt /missing.txt\n", "COPY failed"),
    ],
)
async def test_bad_dockerfile_is_build_failed_with_the_error_in_the_tail(
    engine: DockerEngine, image_name: str, tmp_path: Path, dockerfile: bytes, error: str
) -> None:
    with (
        tar_context(tmp_path, {"Dockerfile": dockerfile}) as ctx,
        pytest.raises(BuildFailed) as caught,
    ):
        await engine.build(
            ctx,
            BuildRequest(
                dockerfile="Dockerfile", tag=image_name, build_args={}, target="", labels={}
            ),
        )
    assert error in str(caught.value)
    assert "\n" not in str(caught.value)
    assert any(error in line for line in caught.value.log_tail)


SLEEP_600 = [b"sleep", b"600"]


async def build_dockerfile(
    pool: EnginePool, tmp_path: Path, tag: str, dockerfile: str
) -> BuildResult:
    with tar_context(tmp_path, {"Dockerfile": dockerfile.encode()}) as ctx:
        return await pool.build(
            ctx, BuildRequest(dockerfile="Dockerfile", tag=tag, build_args={}, target="", labels={})
        )


@pytest.mark.timeout(120)  # the bound: far below the step's 600 s
async def test_a_classic_build_past_its_timeout_is_stopped_and_fails_and_frees_its_place(
    docker_engine: str, base_image: str, image_name: str, tmp_path: Path
) -> None:
    """`RUN sleep 600` under a 5 s build timeout is a failed build naming the timeout, with
    the output so far; the engine stops the step once the build's stream is closed, and the
    pool's one place builds the next image at once."""
    engine = DockerEngine(url=docker_engine, builder="classic", network="host", build_timeout=5)
    pool = EnginePool({docker_engine: engine}, max_per_engine=1)
    marker = uuid.uuid4().hex
    # Not the last command, so the shell that carries the marker stays to wait for it.
    dockerfile = f"FROM {base_image}\nRUN echo started-{marker}; sleep 600; echo {marker}\n"

    def sleeping() -> list[int]:
        return [pid for pid, args in started_by(marker).items() if args[:2] == SLEEP_600]

    try:
        task = asyncio.create_task(build_dockerfile(pool, tmp_path, image_name, dockerfile))
        await eventually(lambda: bool(sleeping()), what="the RUN step did not start")
        steps = sleeping()
        with pytest.raises(BuildFailed) as caught:
            await task
        assert str(caught.value) == "build stopped after 5s (build.timeout)"
        assert f"started-{marker}" in caught.value.log_tail
        await eventually(
            lambda: not running_as(steps, SLEEP_600), what="the engine did not stop the step"
        )
        again = await build_dockerfile(
            pool, tmp_path, image_name, f"FROM {base_image}\nRUN echo again\n"
        )
    finally:
        await pool.close()
    assert inspect(image_name)["Id"] == again.image_id


async def test_base_image_registry_out_of_reach_is_transient(
    engine: DockerEngine, image_name: str, tmp_path: Path
) -> None:
    """The Dockerfile is fine but FROM cannot be pulled: retry later, not a failed build."""
    dockerfile = f"FROM 127.0.0.1:{free_port()}/base:1\n".encode()
    with (
        tar_context(tmp_path, {"Dockerfile": dockerfile}) as ctx,
        pytest.raises(RegistryUnavailable, match="connection refused"),
    ):
        await engine.build(
            ctx,
            BuildRequest(
                dockerfile="Dockerfile", tag=image_name, build_args={}, target="", labels={}
            ),
        )


async def test_base_image_that_does_not_exist_is_build_failed(
    engine: DockerEngine, image_name: str, registry: str, tmp_path: Path
) -> None:
    dockerfile = f"FROM {registry}/reconciler-test/{uuid.uuid4().hex}:1\n".encode()
    with (
        tar_context(tmp_path, {"Dockerfile": dockerfile}) as ctx,
        pytest.raises(BuildFailed, match="not found"),
    ):
        await engine.build(
            ctx,
            BuildRequest(
                dockerfile="Dockerfile", tag=image_name, build_args={}, target="", labels={}
            ),
        )


async def test_unknown_target_is_build_failed(
    engine: DockerEngine, image_name: str, tmp_path: Path
) -> None:
    with (
        tar_context(tmp_path, {"Dockerfile": MULTI_STAGE, "hello.txt": b"hi"}) as ctx,
        pytest.raises(BuildFailed, match="build target"),
    ):
        await engine.build(
            ctx,
            BuildRequest(
                dockerfile="Dockerfile", tag=image_name, build_args={}, target="nope", labels={}
            ),
        )


async def test_rebuild_after_a_change_reuses_the_cached_steps_before_it(
    engine: DockerEngine, base_image: str, image_name: str, tmp_path: Path
) -> None:
    """Only the steps from the changed file on are rebuilt; cached_steps says how many were not."""
    # A RUN step unique to this test, so the first build cannot hit a cache from earlier runs.
    marker = uuid.uuid4().hex
    dockerfile = f"FROM {base_image}\nRUN echo {marker} > /marker\nCOPY app.txt /app.txt\n"

    async def build(app_txt: bytes) -> int:
        files = {"Dockerfile": dockerfile.encode(), "app.txt": app_txt}
        with tar_context(tmp_path, files) as ctx:
            result = await engine.build(
                ctx,
                BuildRequest(
                    dockerfile="Dockerfile", tag=image_name, build_args={}, target="", labels={}
                ),
            )
        return result.cached_steps

    assert await build(b"version 1") == 0
    assert await build(b"version 2") == 1


async def test_push_then_the_registry_has_the_tag(
    engine: DockerEngine, image_name: str, registry: str, tmp_path: Path
) -> None:
    """The pushed tag is there, with the digest push returned; another tag is not."""
    await build_scratch(engine, tmp_path, image_name)
    digest = await engine.push(image_name, auth=None)
    assert digest.startswith("sha256:") and len(digest) == 71

    name, tag = split_image(image_name)
    repository = name.removeprefix(f"{registry}/")
    client = Registry()
    try:
        assert await client.has_tag(registry=registry, repository=repository, tag=tag, auth=None)
        assert not await client.has_tag(
            registry=registry, repository=repository, tag="f" * 40, auth=None
        )
    finally:
        await client.close()
    async with (
        aiohttp.ClientSession() as session,
        session.head(
            f"http://{registry}/v2/{repository}/manifests/{tag}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        ) as answer,
    ):
        assert answer.headers["Docker-Content-Digest"] == digest


async def test_push_to_a_closed_port_is_registry_unavailable_without_the_password(
    engine: DockerEngine, tmp_path: Path
) -> None:
    registry = f"127.0.0.1:{free_port()}"
    image = f"{registry}/reconciler-test/{uuid.uuid4().hex[:12]}:{REVISION}"
    auth = RegistryAuth(username="AWS", password=PASSWORD, server=registry)
    await build_scratch(engine, tmp_path, image)
    try:
        with pytest.raises(RegistryUnavailable) as caught:
            await engine.push(image, auth=auth)
    finally:
        remove_image(image)
    message = str(caught.value)
    assert "connection refused" in message
    assert PASSWORD not in message and PASSWORD not in repr(caught.value)
    assert "\n" not in message


async def test_push_without_credentials_to_a_registry_that_wants_them_stalls(
    engine: DockerEngine, tmp_path: Path
) -> None:
    """A registry asking for credentials we did not give: a human has to fix the config."""

    async def wants_auth(request: web.Request) -> web.StreamResponse:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="test"'})

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", wants_auth)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    image = f"127.0.0.1:{port}/reconciler-test/{uuid.uuid4().hex[:12]}:{REVISION}"
    await build_scratch(engine, tmp_path, image)
    try:
        with pytest.raises(StalledError, match="no basic auth credentials"):
            await engine.push(image, auth=None)
    finally:
        remove_image(image)
        await runner.cleanup()


async def test_push_of_an_image_the_engine_does_not_have(
    engine: DockerEngine, registry: str
) -> None:
    """Removed between build and push: transient, the next pass builds it again."""
    image = f"{registry}/reconciler-test/{uuid.uuid4().hex[:12]}:{REVISION}"
    with pytest.raises(DockerUnavailable, match="does not exist locally"):
        await engine.push(image, auth=None)


def image_id(image: str) -> str:
    return subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.strip()


async def test_a_tag_names_the_same_image_and_one_of_an_image_not_there_is_transient(
    engine: DockerEngine, image_name: str, registry: str, tmp_path: Path
) -> None:
    await build_scratch(engine, tmp_path, image_name)
    also = f"{registry}/reconciler-test/{uuid.uuid4().hex[:12]}:cache-test"
    try:
        await engine.tag(image_name, also)
        assert image_id(also) == image_id(image_name)
    finally:
        remove_image(also)
    with pytest.raises(DockerUnavailable, match="No such image"):
        await engine.tag(f"{registry}/reconciler-test/never-built:{REVISION}", also)


async def test_images_are_listed_by_label_and_a_tag_removed_goes_once(
    engine: DockerEngine, image_name: str, tmp_path: Path
) -> None:
    """Removing a tag that is not there (any more) is fine."""
    label = f"reconciler.app=test-{uuid.uuid4().hex[:8]}"
    with tar_context(tmp_path, {"Dockerfile": b"FROM scratch\nCOPY f /f\n", "f": b"x"}) as ctx:
        name, value = label.split("=")
        request = BuildRequest(
            dockerfile="Dockerfile", tag=image_name, build_args={}, target="", labels={name: value}
        )
        await engine.build(ctx, request)
    [listed] = await engine.local_images(label=label)
    assert listed.tags == (image_name,) and listed.image_id.startswith("sha256:")
    await engine.remove_image(image_name)
    assert await engine.local_images(label=label) == []
    await engine.remove_image(image_name)


@pytest.fixture
def dead_engine(tmp_path: Path) -> Iterator[DockerEngine]:
    yield DockerEngine(url=f"unix://{tmp_path}/nonexistent.sock")


async def test_missing_socket_is_docker_unavailable_for_every_call(
    dead_engine: DockerEngine, tmp_path: Path
) -> None:
    with pytest.raises(DockerUnavailable, match=r"nonexistent\.sock"):
        await dead_engine.ping()
    with (
        tar_context(tmp_path, {"Dockerfile": b"FROM scratch\n"}) as ctx,
        pytest.raises(DockerUnavailable),
    ):
        await dead_engine.build(
            ctx,
            BuildRequest(dockerfile="Dockerfile", tag="x:1", build_args={}, target="", labels={}),
        )
    auth = RegistryAuth(username="AWS", password=PASSWORD, server="127.0.0.1:5000")
    with pytest.raises(DockerUnavailable) as caught:
        await dead_engine.push(f"127.0.0.1:5000/app:{REVISION}", auth=auth)
    assert PASSWORD not in str(caught.value)
    await dead_engine.close()


async def test_the_real_engine_answers_ping(engine: DockerEngine) -> None:
    await engine.ping()


# A fake engine on a Unix socket, for the failures the real one cannot be made to produce
# quickly. aiodocker asks /version first, then the versioned endpoint.

Stream = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def fake_engine(tmp_path: Path) -> AsyncIterator[Callable[[Stream], Awaitable[DockerEngine]]]:
    runners: list[web.AppRunner] = []
    clients: list[DockerEngine] = []

    async def start(handler: Stream) -> DockerEngine:
        async def version(request: web.Request) -> web.StreamResponse:
            return web.json_response({"ApiVersion": "1.41"})

        app = web.Application()
        app.router.add_get("/version", version)
        app.router.add_route("*", "/v1.41/{path:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        path = tmp_path / f"engine-{len(runners)}.sock"
        await web.UnixSite(runner, str(path)).start()
        runners.append(runner)
        clients.append(DockerEngine(url=f"unix://{path}"))
        return clients[-1]

    yield start
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()


def progress(*lines: dict[str, Any], cut: bool = False) -> Stream:
    """A handler answering 200 with these JSON progress lines; `cut` drops the connection."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse()
        await response.prepare(request)
        for line in lines:
            await response.write(json.dumps(line).encode() + b"\r\n")
        if cut:
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    return handle


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("denied: requested access to the resource is denied", StalledError),
        ("unauthorized: authentication required", StalledError),
        (
            "denied: Your authorization token has expired. Reauthenticate and try again.",
            RegistryUnavailable,
        ),
        ("received unexpected HTTP status: 500 Internal Server Error", RegistryUnavailable),
        ('Get "https://r.example/v2/": net/http: TLS handshake timeout', RegistryUnavailable),
    ],
)
async def test_push_errors_are_typed_by_what_helps(
    fake_engine: Callable[[Stream], Awaitable[DockerEngine]],
    message: str,
    expected: type[Exception],
) -> None:
    """Refused credentials need a human; a registry that is down or a stale token does not."""
    client = await fake_engine(
        progress({"status": "The push refers to repository"}, {"error": message + f" {PASSWORD}"})
    )
    auth = RegistryAuth(username="AWS", password=PASSWORD, server="r.example")
    with pytest.raises(expected) as caught:
        await client.push(f"r.example/app:{REVISION}", auth=auth)
    assert type(caught.value) is expected
    assert message.split(":", maxsplit=1)[0] in str(caught.value)
    assert PASSWORD not in str(caught.value)


async def test_push_sends_the_credentials_and_returns_the_digest(
    fake_engine: Callable[[Stream], Awaitable[DockerEngine]],
) -> None:
    seen: dict[str, Any] = {}
    digest = "sha256:" + "ab" * 32
    stream = progress({"status": f"{REVISION}: digest: {digest} size: 523"})

    async def handle(request: web.Request) -> web.StreamResponse:
        seen["auth"] = json.loads(base64.urlsafe_b64decode(request.headers["X-Registry-Auth"]))
        seen["path"], seen["tag"] = request.path, request.query.get("tag")
        return await stream(request)

    client = await fake_engine(handle)
    auth = RegistryAuth(username="AWS", password=PASSWORD, server="r.example")
    assert await client.push(f"r.example/team/app:{REVISION}", auth=auth) == digest
    assert seen == {
        "auth": {"username": "AWS", "password": PASSWORD, "serveraddress": "r.example"},
        "path": "/v1.41/images/r.example/team/app/push",
        "tag": REVISION,
    }


async def test_engine_dropping_the_build_stream_is_docker_unavailable(
    fake_engine: Callable[[Stream], Awaitable[DockerEngine]], tmp_path: Path
) -> None:
    """An engine that dies mid-build is not a failed build: it must not count against it."""
    client = await fake_engine(progress({"stream": "Step 1/2 : FROM scratch\n"}, cut=True))
    with (
        tar_context(tmp_path, {"Dockerfile": b"FROM scratch\n"}) as ctx,
        pytest.raises(DockerUnavailable),
    ):
        await client.build(
            ctx,
            BuildRequest(dockerfile="Dockerfile", tag="x:1", build_args={}, target="", labels={}),
        )


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (500, "write /var/lib/docker/tmp: no space left on device", DockerUnavailable),
        (503, "engine is shutting down", DockerUnavailable),
        (500, "Cannot locate specified Dockerfile: Dockerfile", BuildFailed),
    ],
)
async def test_engine_refusing_a_build_is_typed_by_cause(
    fake_engine: Callable[[Stream], Awaitable[DockerEngine]],
    tmp_path: Path,
    status: int,
    message: str,
    expected: type[Exception],
) -> None:
    """A 5xx about the engine itself is transient; one about the Dockerfile is a failed build."""

    async def refuse(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.json_response({"message": message}, status=status)

    client = await fake_engine(refuse)
    with (
        tar_context(tmp_path, {"Dockerfile": b"FROM scratch\n"}) as ctx,
        pytest.raises(expected, match=message.split(":", maxsplit=1)[0]),
    ):
        await client.build(
            ctx,
            BuildRequest(dockerfile="Dockerfile", tag="x:1", build_args={}, target="", labels={}),
        )


# One instance per kind of exception the mapper claims; a kind added to ENGINE_ERRORS without a
# case here fails test_every_claimed_engine_error_kind_has_a_case.
ENGINE_CASES: list[Exception] = [
    DockerError(900, "Cannot connect to Docker Engine via unix:///var/run/docker.sock"),
    DockerError(500, "Internal Server Error"),
    DockerStreamError("unexpected EOF"),
    aiohttp.ClientConnectionError("Cannot connect to unix socket"),
    aiohttp.ClientOSError(104, "Connection reset by peer"),
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientPayloadError("Response payload is not completed"),
    TimeoutError(),
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    FileNotFoundError(2, "No such file or directory", "/var/run/docker.sock"),
]


def test_every_claimed_engine_error_kind_has_a_case() -> None:
    for kind in ENGINE_ERRORS:
        assert any(isinstance(case, kind) for case in ENGINE_CASES), kind


@pytest.mark.parametrize("error", ENGINE_CASES, ids=lambda e: type(e).__name__)
def test_engine_errors_become_docker_unavailable(error: Exception) -> None:
    with pytest.raises(DockerUnavailable) as caught, engine_errors("push", secret=PASSWORD):
        raise error
    assert caught.value.__cause__ is error


def test_engine_error_messages_drop_the_secret() -> None:
    with pytest.raises(DockerUnavailable) as caught, engine_errors("push", secret=PASSWORD):
        raise DockerError(500, f"bad auth {PASSWORD}\nsecond line")
    assert PASSWORD not in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("127.0.0.1:5000/app:abc", ("127.0.0.1:5000/app", "abc")),
        (
            "123.dkr.ecr.us-east-1.amazonaws.com/team/web:" + REVISION,
            ("123.dkr.ecr.us-east-1.amazonaws.com/team/web", REVISION),
        ),
    ],
)
def test_split_image(image: str, parts: tuple[str, str]) -> None:
    assert split_image(image) == parts


def test_split_image_needs_a_tag() -> None:
    with pytest.raises(ValueError, match="no tag"):
        split_image("127.0.0.1:5000/app")
