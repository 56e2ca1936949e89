"""BuildKit builds through the Docker CLI: cache mounts, stages, labels, and the errors.

The builds run the real CLI against the real engine, with RUN steps on the host network (or
none): the test engine has no bridge. Behaviour the real CLI only shows by breaking the engine
(an engine dying mid-build, the CLI refusing its flags) comes from a fake `docker` on PATH
that prints a transcript in the real CLI's words, and records what it was given.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from reconciler.adapters import buildkit
from reconciler.adapters.docker import DockerEngine
from reconciler.adapters.engine_api import LOG_TAIL_LINES
from reconciler.adapters.engines import EnginePool
from reconciler.adapters.values import BuildRequest
from reconciler.errors import BuildFailed, DockerUnavailable, RegistryUnavailable, StalledError
from tests.support.net import free_port
from tests.support.processes import command_lines, running_as, started_by

SECRET = "build-secret-" + uuid.uuid4().hex


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


def file_in(image: str, path: str) -> str:
    """The content of `path` in `image`, read by a container without a network."""
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "cat", path],
        capture_output=True,
        check=True,
        text=True,
        timeout=60,
    )
    return out.stdout


def engine_version() -> int:
    out = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        check=True,
        text=True,
    )
    return int(out.stdout.strip().split(".")[0])


def remove_image(image: str) -> None:
    """Clean up a test image; it may not have been built."""
    subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, check=False)


@pytest.fixture
def tag() -> Iterator[str]:
    """A unique local image tag; removed from the engine afterwards."""
    name = f"reconciler-test/buildkit-{uuid.uuid4().hex[:12]}:1"
    yield name
    remove_image(name)


@pytest.fixture
async def buildkit_engine(docker_engine: str) -> AsyncIterator[DockerEngine]:
    client = DockerEngine(url=docker_engine, builder="buildkit", network="host")
    yield client
    await client.close()


async def build(
    engine: DockerEngine | EnginePool,
    tmp_path: Path,
    tag: str,
    dockerfile: str,
    *,
    files: dict[str, bytes] | None = None,
    build_args: dict[str, str] | None = None,
    target: str = "",
    labels: dict[str, str] | None = None,
) -> Any:
    with tar_context(tmp_path, {"Dockerfile": dockerfile.encode(), **(files or {})}) as ctx:
        return await engine.build(
            ctx,
            BuildRequest(
                dockerfile="Dockerfile",
                tag=tag,
                build_args=build_args or {},
                target=target,
                labels=labels or {},
            ),
        )


def cache_mount_dockerfile(base_image: str, marker: str) -> str:
    """A RUN step before a cache-mount step; the latter lists what earlier rounds left."""
    # The cache id is unique to the test, so an earlier run's cache cannot answer for it.
    return f"""\
FROM {base_image}
RUN echo {marker} > /marker
ARG ROUND
RUN --mount=type=cache,target=/cache,id={marker} \\
    sh -c 'ls /cache > /seen; echo "$ROUND" > /cache/round-$ROUND'
"""


# Real CLI, real engine.


@pytest.mark.parametrize("builder", ["auto", "buildkit"])
async def test_a_cache_mount_dockerfile_builds(
    docker_engine: str, base_image: str, tag: str, tmp_path: Path, builder: str
) -> None:
    engine = DockerEngine(url=docker_engine, builder=builder, network="host")
    try:
        assert await engine.builder() == "buildkit"
        marker = uuid.uuid4().hex
        result = await build(
            engine,
            tmp_path,
            tag,
            cache_mount_dockerfile(base_image, marker),
            build_args={"ROUND": "1"},
        )
    finally:
        await engine.close()
    assert inspect(tag)["Id"] == result.image_id
    assert file_in(tag, "/marker").strip() == marker
    assert len(result.log_tail) <= LOG_TAIL_LINES
    assert any("naming to" in line for line in result.log_tail)


async def test_rebuild_reuses_the_cache_mount_and_the_steps_before_the_change(
    buildkit_engine: DockerEngine, base_image: str, tag: str, tmp_path: Path
) -> None:
    """The changed step runs again and finds what the first build left in its cache mount."""
    dockerfile = cache_mount_dockerfile(base_image, uuid.uuid4().hex)
    first = await build(buildkit_engine, tmp_path, tag, dockerfile, build_args={"ROUND": "1"})
    assert first.cached_steps == 0
    assert file_in(tag, "/seen").split() == []

    second = await build(buildkit_engine, tmp_path, tag, dockerfile, build_args={"ROUND": "2"})
    assert second.cached_steps == 1  # RUN echo marker; FROM does not count
    assert file_in(tag, "/seen").split() == ["round-1"]
    assert second.image_id != first.image_id


async def test_heredoc_dockerfile_builds_where_the_engine_frontend_has_heredocs(
    buildkit_engine: DockerEngine, base_image: str, tag: str, tmp_path: Path
) -> None:
    """Heredocs are parsed by the engine's Dockerfile frontend, not by the CLI or by us.

    Engines from release 23 on carry a frontend that knows them. Release 20.10 (Debian 12's)
    does not, and a `# syntax=` line naming a newer frontend needs a registry that has it; so
    there the same Dockerfile is a BuildFailed that names the line, not a hang or a crash.
    """
    dockerfile = f"""\
FROM {base_image}
RUN <<EOT
echo from a heredoc > /heredoc
EOT
"""
    if engine_version() >= 23:
        await build(buildkit_engine, tmp_path, tag, dockerfile)
        assert file_in(tag, "/heredoc").strip() == "from a heredoc"
        return
    with pytest.raises(BuildFailed, match="unknown instruction") as caught:
        await build(buildkit_engine, tmp_path, tag, dockerfile)
    assert "\n" not in str(caught.value)


async def test_labels_and_build_args_reach_the_image(
    buildkit_engine: DockerEngine, base_image: str, tag: str, tmp_path: Path
) -> None:
    labels = {
        "org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
        "org.opencontainers.image.source": "https://example.com/acme/web.git",
    }
    dockerfile = f"""\
FROM {base_image}
ARG GREETING=unset
ARG TOKEN
LABEL greeting=$GREETING
RUN echo "$TOKEN" > /token
"""
    await build(
        buildkit_engine,
        tmp_path,
        tag,
        dockerfile,
        build_args={"GREETING": "hello", "TOKEN": SECRET},
        labels=labels,
    )
    image_labels = inspect(tag)["Config"]["Labels"]
    assert {k: image_labels[k] for k in labels} == labels
    assert image_labels["greeting"] == "hello"
    # The value came through the CLI's environment (see the argv test below).
    assert file_in(tag, "/token").strip() == SECRET


async def test_target_builds_only_up_to_that_stage(
    buildkit_engine: DockerEngine, base_image: str, tag: str, tmp_path: Path
) -> None:
    dockerfile = f"""\
FROM {base_image} AS app
RUN echo app > /stage

FROM app AS broken
RUN echo about to fail && exit 7
"""
    await build(buildkit_engine, tmp_path, tag, dockerfile, target="app")
    assert file_in(tag, "/stage").strip() == "app"
    with pytest.raises(BuildFailed, match="exit code: 7"):
        await build(buildkit_engine, tmp_path, tag, dockerfile)


@pytest.mark.parametrize(
    ("dockerfile", "error"),
    [
        # A RUN step failing: the step's own error line says how.
        ("FROM {base}\nRUN echo going down; exit 3\n", "exit code: 3"),
        # COPY of a file the context does not have.
        ("FROM scratch\nCOPY missing.txt /missing.txt\n", '"/missing.txt" not found'),
        # Refused by the frontend before any step runs.
        ("FORM scratch\n", "unknown instruction: FORM"),
    ],
    ids=["run", "copy", "parse"],
)
async def test_broken_dockerfile_is_build_failed_with_the_error_in_the_tail(
    buildkit_engine: DockerEngine, base_image: str, tmp_path: Path, dockerfile: str, error: str
) -> None:
    tag = f"reconciler-test/broken-{uuid.uuid4().hex[:12]}:1"  # never built, nothing to remove
    with pytest.raises(BuildFailed) as caught:
        await build(buildkit_engine, tmp_path, tag, dockerfile.format(base=base_image))
    message = str(caught.value)
    assert message.startswith(f"build of {tag} failed: ")
    assert error in message
    assert "\n" not in message
    assert any(error in line for line in caught.value.log_tail)


async def test_a_failing_step_after_much_output_keeps_its_error_and_its_last_lines(
    buildkit_engine: DockerEngine, base_image: str, tag: str, tmp_path: Path
) -> None:
    """A chatty step: the tail is its last lines plus the error, however much came before."""
    dockerfile = f"FROM {base_image}\nRUN for i in $(seq 500); do echo line-$i; done; exit 4\n"
    with pytest.raises(BuildFailed, match=r"\[2/2\] RUN .*exit code: 4") as caught:
        await build(buildkit_engine, tmp_path, tag, dockerfile)
    tail = caught.value.log_tail
    assert len(tail) <= LOG_TAIL_LINES + 1
    assert any(line.endswith("line-500") for line in tail)
    assert any("ERROR:" in line and "exit code: 4" in line for line in tail)


@pytest.mark.parametrize("builder", ["buildkit", "classic"])
async def test_run_steps_without_a_network(
    docker_engine: str, base_image: str, tag: str, tmp_path: Path, builder: str
) -> None:
    """The network setting means the same to both builders."""
    engine = DockerEngine(url=docker_engine, builder=builder, network="none")
    try:
        await build(engine, tmp_path, tag, f"FROM {base_image}\nRUN ls /sys/class/net > /nets\n")
    finally:
        await engine.close()
    assert file_in(tag, "/nets").split() == ["lo"]


async def test_base_image_registry_out_of_reach_is_transient(
    buildkit_engine: DockerEngine, tag: str, tmp_path: Path
) -> None:
    dockerfile = f"FROM 127.0.0.1:{free_port()}/base:1\nRUN true\n"
    with pytest.raises(RegistryUnavailable, match="connection refused"):
        await build(buildkit_engine, tmp_path, tag, dockerfile)


async def test_base_image_that_does_not_exist_is_build_failed(
    buildkit_engine: DockerEngine, registry: str, tag: str, tmp_path: Path
) -> None:
    dockerfile = f"FROM {registry}/reconciler-test/{uuid.uuid4().hex}:1\n"
    with pytest.raises(BuildFailed, match="not found"):
        await build(buildkit_engine, tmp_path, tag, dockerfile)


async def test_unknown_target_is_build_failed(
    buildkit_engine: DockerEngine, tag: str, tmp_path: Path
) -> None:
    with pytest.raises(BuildFailed, match=r"target stage nope|build target"):
        await build(buildkit_engine, tmp_path, tag, "FROM scratch AS app\n", target="nope")


@pytest.mark.parametrize("url", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:{port}"])
async def test_an_engine_that_is_not_there_is_docker_unavailable(
    docker_engine: str, tmp_path: Path, url: str
) -> None:
    engine = DockerEngine(url=url.format(port=free_port()), builder="buildkit", network="host")
    with pytest.raises(DockerUnavailable, match="Docker engine unavailable"):
        await build(engine, tmp_path, "x:1", "FROM scratch\n")
    await engine.close()


async def test_a_buildkit_image_pushes_like_any_other(
    buildkit_engine: DockerEngine, base_image: str, registry: str, tmp_path: Path
) -> None:
    image = f"{registry}/reconciler-test/{uuid.uuid4().hex[:12]}:1"
    try:
        await build(buildkit_engine, tmp_path, image, f"FROM {base_image}\nRUN echo x > /x\n")
        digest = await buildkit_engine.push(image, auth=None)
    finally:
        remove_image(image)
    assert digest.startswith("sha256:")


async def test_classic_builder_rejects_cache_mounts(
    docker_engine: str, base_image: str, tag: str, tmp_path: Path
) -> None:
    """Why BuildKit is the config's default: the classic builder refuses today's Dockerfiles."""
    engine = DockerEngine(url=docker_engine, builder="classic", network="host")
    try:
        assert await engine.builder() == "classic"
        with pytest.raises(BuildFailed, match="--mount") as caught:
            await build(engine, tmp_path, tag, cache_mount_dockerfile(base_image, "x"))
    finally:
        await engine.close()
    assert "BuildKit" in str(caught.value)


def running_with(text: str) -> list[int]:
    """Pids of processes whose command line contains `text`."""
    return [pid for pid, args in command_lines().items() if text.encode() in b"\0".join(args)]


async def eventually(check: Any, *, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"{what} within {within} s")
        await asyncio.sleep(0.1)


async def test_a_cancelled_build_kills_the_cli_and_the_engine_stops_the_step(
    buildkit_engine: DockerEngine, base_image: str, tag: str, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    # Not the last command, so the shell that carries the marker stays to wait for it.
    dockerfile = f"FROM {base_image}\nRUN sleep 120; echo {marker}\n"
    task = asyncio.create_task(build(buildkit_engine, tmp_path, tag, dockerfile))
    await eventually(lambda: running_with(marker), within=30, what="the RUN step did not start")
    assert running_with(tag), "the CLI is not running"

    started = asyncio.get_running_loop().time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.get_running_loop().time() - started < 5
    assert running_with(tag) == []  # the CLI was reaped before the cancel returned
    # The CLI's connection closing is what cancels the build in the engine.
    await eventually(
        lambda: not running_with(marker), within=30, what="the engine did not stop the step"
    )


@pytest.mark.timeout(150)  # the bound: far below the step's 600 s
async def test_a_build_past_its_timeout_is_stopped_and_fails_and_frees_its_place(
    docker_engine: str, base_image: str, tag: str, tmp_path: Path
) -> None:
    """`RUN sleep 600` under a 5 s build timeout is a failed build naming the timeout, with
    the output so far; the CLI and the step are stopped, and the pool's one place builds the
    next image at once."""
    engine = DockerEngine(url=docker_engine, builder="buildkit", network="host", build_timeout=5.0)
    pool = EnginePool({docker_engine: engine}, max_per_engine=1)
    marker = uuid.uuid4().hex
    # Not the last command, so the shell that carries the marker stays to wait for it.
    dockerfile = f"FROM {base_image}\nRUN echo started-{marker}; sleep 600; echo {marker}\n"
    try:
        task = asyncio.create_task(build(pool, tmp_path, tag, dockerfile))
        await eventually(lambda: sleeping(marker), within=60, what="the RUN step did not start")
        steps = sleeping(marker)
        with pytest.raises(BuildFailed) as caught:
            await task
        assert str(caught.value) == "build stopped after 5s (build.timeout)"
        assert any(f"started-{marker}" in line for line in caught.value.log_tail)
        assert running_with(tag) == []  # the CLI was reaped before the failure was raised
        await eventually(
            lambda: not running_as(steps, SLEEP_600),
            within=30,
            what="the engine did not stop the step",
        )
        again = await build(pool, tmp_path, tag, f"FROM {base_image}\nRUN echo {marker}-again\n")
    finally:
        await pool.close()
    assert inspect(tag)["Id"] == again.image_id


SLEEP_600 = [b"sleep", b"600"]


def sleeping(marker: str) -> list[int]:
    """PIDs of the `sleep 600` processes a RUN step whose shell carries `marker` started."""
    return [pid for pid, args in started_by(marker).items() if args[:2] == SLEEP_600]


# A fake CLI, for what the real one only says when the engine breaks.


@pytest.fixture
def fake_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker` first on PATH: release 20.10, prints `transcript`, then runs `finish`.

    It records its arguments, its environment and the context it was sent beside itself.
    `finish` is shell run with the CLI's arguments (`exit 1`, `kill -9 $$`, ...); a `hang`
    file makes it sleep that many seconds instead of reading its stdin.
    """
    folder = tmp_path / "fake-bin"
    folder.mkdir()
    script = folder / "docker"
    script.write_text(
        f"""#!/bin/sh
if [ "$1" = "--version" ]; then echo "Docker version 20.10.99, build fake"; exit 0; fi
here={folder}
for arg in "$@"; do printf '%s\\n' "$arg"; done > "$here/argv"
/usr/bin/env > "$here/env"
if [ -e "$here/hang" ]; then exec /bin/sleep "$(/bin/cat "$here/hang")"; fi
if [ ! -e "$here/no-read" ]; then /bin/cat > "$here/context"; fi
/bin/cat "$here/transcript" >&2
. "$here/finish"
"""
    )
    script.chmod(0o755)
    (folder / "transcript").write_text("")
    (folder / "finish").write_text("exit 0\n")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def fake_engine() -> DockerEngine:
    return DockerEngine(url="unix:///fake/docker.sock", builder="buildkit", network="host")


RUN_FAILS = """\
#5 [2/2] RUN make
#5 sha256:965a5373c4906b5768dd476f7b805d4a1994363e79c01c08137173d8eb1d755c
#5 0.080 compiling
#5 ERROR: executor failed running [/bin/sh -c make]: exit code: 2
------
 > [2/2] RUN make:
------
executor failed running [/bin/sh -c make]: exit code: 2
"""


@pytest.mark.parametrize(
    ("transcript", "finish", "expected", "words"),
    [
        (RUN_FAILS, "exit 1", BuildFailed, "[2/2] RUN make: executor failed running"),
        (
            "#5 [2/2] RUN make\n#5 0.1 compiling\n"
            "failed to receive status: rpc error: code = Unavailable desc = error reading"
            " from server: EOF\n",
            "exit 1",
            DockerUnavailable,
            "error reading from server",
        ),
        (
            "Error response from daemon: write /var/lib/docker/tmp: no space left on device\n",
            "exit 1",
            DockerUnavailable,
            "no space left on device",
        ),
        (
            "unknown flag: --iidfile\nSee 'docker build --help'.\n",
            "exit 125",
            StalledError,
            "--iidfile",
        ),
        ("#1 [internal] load remote build context\n", "kill -9 $$", DockerUnavailable, "signal 9"),
        ("", "exit 0", DockerUnavailable, "without an image"),
        (
            "#1 [internal] load remote build context\n"
            '#1 ERROR: Get "http://build-context-aagy6ky04jaeu": context not found\n'
            "------\n > [internal] load remote build context:\n------\n"
            "failed to solve with frontend dockerfile.v0: failed to read downloaded context\n",
            "exit 1",
            DockerUnavailable,
            "did not get the build context",
        ),
    ],
    ids=[
        "step",
        "engine-gone",
        "engine-refused",
        "cli-refused",
        "killed",
        "no-image",
        "context-lost",
    ],
)
async def test_cli_failures_are_typed_by_what_helps(
    fake_cli: Path, transcript: str, finish: str, expected: type[Exception], words: str
) -> None:
    (fake_cli / "transcript").write_text(transcript)
    (fake_cli / "finish").write_text(finish)
    with pytest.raises(expected) as caught:
        await build(fake_engine(), fake_cli.parent, "x:1", "FROM scratch\n")
    assert type(caught.value) is expected
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_a_failing_steps_error_is_kept_when_more_output_follows_it(
    fake_cli: Path, tmp_path: Path
) -> None:
    """The error line printed before a long summary stays in the tail and in the message."""
    summary = "".join(f"#5 {i / 100:.3f} make: noise {i}\n" for i in range(3 * LOG_TAIL_LINES))
    transcript = RUN_FAILS.replace("------\n", f"------\n{summary}", 1)
    (fake_cli / "transcript").write_text(transcript)
    (fake_cli / "finish").write_text("exit 1")
    with pytest.raises(BuildFailed) as caught:
        await build(fake_engine(), tmp_path, "x:1", "FROM scratch\n")
    tail = caught.value.log_tail
    assert "#5 ERROR: executor failed running [/bin/sh -c make]: exit code: 2" in tail
    assert "executor failed running [/bin/sh -c make]: exit code: 2" in tail  # the CLI's last
    assert len(tail) <= LOG_TAIL_LINES + 1
    assert "[2/2] RUN make: executor failed running" in str(caught.value)


async def test_build_args_travel_in_the_environment_and_the_context_on_stdin(
    fake_cli: Path, tmp_path: Path
) -> None:
    """No build-arg value on the command line, where any local user can read it."""
    (fake_cli / "transcript").write_text("#4 [2/2] RUN true\n#4 CACHED\n")
    iid = "sha256:" + "ab" * 32
    (fake_cli / "finish").write_text(
        f'while [ "$1" != --iidfile ]; do shift; done; echo {iid} > "$2"; exit 0'
    )
    big = os.urandom(3 * buildkit.CHUNK + 17)
    with tar_context(tmp_path, {"Dockerfile": b"FROM scratch\n", "blob": big}) as ctx:
        sent = ctx.read()
        ctx.seek(0)
        result = await fake_engine().build(
            ctx,
            BuildRequest(
                dockerfile="sub/Dockerfile",
                tag="x:1",
                build_args={"TOKEN": SECRET, "BUILDKIT_INLINE_CACHE": "1"},
                target="app",
                labels={"team": "web"},
            ),
        )
    assert result.image_id == iid
    assert result.cached_steps == 1
    argv = (fake_cli / "argv").read_text().splitlines()
    assert SECRET not in "\n".join(argv)
    assert argv[:2] == ["-H", "unix:///fake/docker.sock"]
    for flag, value in [
        ("-f", "sub/Dockerfile"),
        ("-t", "x:1"),
        ("--target", "app"),
        ("--network", "host"),
        ("--label", "team=web"),
    ]:
        assert argv[argv.index(flag) + 1] == value
    assert "--progress=plain" in argv and argv[-1] == "-"
    assert argv[argv.index("TOKEN") - 1 : argv.index("TOKEN") + 1] == ["--build-arg", "TOKEN"]
    # A name the CLI reads itself stays out of its environment; such names hold no secrets.
    assert "BUILDKIT_INLINE_CACHE=1" in argv
    env = dict(
        line.split("=", 1) for line in (fake_cli / "env").read_text().splitlines() if "=" in line
    )
    assert env["TOKEN"] == SECRET
    assert env["DOCKER_BUILDKIT"] == "1"
    assert "BUILDKIT_INLINE_CACHE" not in env
    assert (fake_cli / "context").read_bytes() == sent  # streamed whole, byte for byte


async def test_a_cli_that_stops_reading_the_context_does_not_hang_the_build(
    fake_cli: Path, tmp_path: Path
) -> None:
    (fake_cli / "no-read").touch()
    (fake_cli / "transcript").write_text(
        "Cannot connect to the Docker daemon at unix:///fake/docker.sock."
        " Is the docker daemon running?\n"
    )
    (fake_cli / "finish").write_text("exit 1")
    files = {"Dockerfile": b"FROM scratch\n", "blob": os.urandom(8 * buildkit.CHUNK)}
    with tar_context(tmp_path, files) as ctx, pytest.raises(DockerUnavailable):
        await asyncio.wait_for(
            fake_engine().build(
                ctx,
                BuildRequest(
                    dockerfile="Dockerfile", tag="x:1", build_args={}, target="", labels={}
                ),
            ),
            timeout=30,
        )


async def test_a_cancelled_build_reaps_the_cli(fake_cli: Path, tmp_path: Path) -> None:
    seconds = f"299.{uuid.uuid4().int % 10**9}"  # a sleep no other process runs
    (fake_cli / "hang").write_text(seconds)
    task = asyncio.create_task(build(fake_engine(), tmp_path, "hang:1", "FROM scratch\n"))
    await eventually(lambda: running_with(seconds), within=10, what="the CLI did not hang")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert running_with(seconds) == []


@pytest.mark.parametrize(
    ("on_term", "last_line"),
    [
        # A CLI that cancels its build and says so is given the time to.
        (
            'trap \'echo "#5 CANCELED" >&2; echo "context canceled" >&2; exit 1\' TERM',
            "context canceled",
        ),
        # One that lets SIGTERM go unanswered is killed, with what it started.
        ("trap '' TERM", "#5 0.1 step output"),
    ],
    ids=["answers SIGTERM", "ignores SIGTERM"],
)
# Far below the child's sleep, which the build would wait out if the child held its output.
@pytest.mark.timeout(30)
async def test_a_cli_past_the_build_timeout_is_stopped_with_what_it_started(
    fake_cli: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_term: str, last_line: str
) -> None:
    monkeypatch.setattr(buildkit, "STOP_GRACE", 1.0)
    seconds = f"299.{uuid.uuid4().int % 10**9}"  # a sleep no other process runs
    (fake_cli / "transcript").write_text("#5 [2/2] RUN make\n#5 0.1 step output\n")
    (fake_cli / "finish").write_text(f"{on_term}\n/bin/sleep {seconds} &\nwait\nwait\n")
    engine = DockerEngine(
        url="unix:///fake/docker.sock", builder="buildkit", network="host", build_timeout=1.5
    )
    with pytest.raises(BuildFailed) as caught:
        await build(engine, tmp_path, "hang:1", "FROM scratch\n")
    assert str(caught.value) == "build stopped after 1.5s (build.timeout)"
    assert caught.value.log_tail[-1] == last_line
    await eventually(lambda: not running_with(seconds), within=10, what="the CLI's child lived on")


# Finding the CLI.


def write_cli(folder: Path, *, version: str, buildx: bool) -> None:
    folder.mkdir(parents=True)
    script = folder / "docker"
    script.write_text(
        f"""#!/bin/sh
if [ "$1" = "--version" ]; then echo "Docker version {version}, build fake"; exit 0; fi
if [ "$1" = "buildx" ] && [ "$2" = "version" ]; then {"exit 0" if buildx else "exit 1"}; fi
exit 1
"""
    )
    script.chmod(0o755)


async def test_the_first_cli_on_path_that_can_build_with_buildkit_is_used(
    tmp_path: Path,
) -> None:
    """A CLI of release 23 or later without buildx cannot; an older one, or one with, can."""
    write_cli(tmp_path / "new-no-buildx", version="28.2.2", buildx=False)
    write_cli(tmp_path / "old", version="20.10.24+dfsg1", buildx=False)
    write_cli(tmp_path / "new-buildx", version="27.0.1", buildx=True)
    (tmp_path / "empty").mkdir()

    def path(*names: str) -> str:
        return os.pathsep.join(str(tmp_path / name) for name in names)

    found = await buildkit.find_cli(path("empty", "new-no-buildx", "old", "new-buildx"))
    assert found == buildkit.DockerCli(
        path=str(tmp_path / "old" / "docker"), version="20.10.24+dfsg1"
    )
    found = await buildkit.find_cli(path("new-no-buildx", "new-buildx", "old"))
    assert found is not None and found.version == "27.0.1"
    assert await buildkit.find_cli(path("empty", "new-no-buildx")) is None


async def test_buildkit_without_a_cli_stalls_and_auto_falls_back_to_classic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    insisting = DockerEngine(url="unix:///nonexistent.sock", builder="buildkit")
    with pytest.raises(StalledError, match='builder = "buildkit" needs the docker CLI on PATH'):
        await build(insisting, tmp_path, "x:1", "FROM scratch\n")
    auto = DockerEngine(url="unix:///nonexistent.sock", builder="auto")
    assert await auto.builder() == "classic"
    # The classic builder talks to the engine itself, so the missing engine is what it reports.
    with pytest.raises(DockerUnavailable):
        await build(auto, tmp_path, "x:1", "FROM scratch\n")
    await auto.close()


def test_settings_that_mean_nothing_are_refused() -> None:
    with pytest.raises(ValueError, match="builder"):
        DockerEngine(builder="kaniko")
    with pytest.raises(ValueError, match="network"):
        DockerEngine(network="bridge")


# Reading the CLI's output.


def test_lines_are_split_across_chunks_and_cut_when_too_long() -> None:
    splitter = buildkit.LineSplitter()
    assert splitter.feed(b"one\ntw") == ["one"]
    assert splitter.feed(b"o\r\n\nthr") == ["two", ""]
    assert splitter.feed(b"ee") == []
    long = b"x" * (3 * buildkit.LINE_CAP)
    assert splitter.feed(b"\n" + long[:10]) == ["three"]
    assert splitter.feed(long) == []
    cut = splitter.feed(b"tail of it\nnext\n")
    assert cut == ["x" * buildkit.LINE_CAP + " [line cut]", "next"]
    assert splitter.feed(long + b"\n") == ["x" * buildkit.LINE_CAP + " [line cut]"]
    assert splitter.feed(b"no newline at the end") == []
    assert splitter.close() == ["no newline at the end"]
    assert splitter.close() == []


def test_cached_steps_count_dockerfile_steps_but_not_from() -> None:
    progress = buildkit.PlainProgress(tail_lines=5)
    for line in [
        "#3 [internal] load metadata for docker.io/library/busybox:1",
        "#3 DONE 0.0s",
        "#4 [1/4] FROM docker.io/library/busybox:1",
        "#4 CACHED",
        "#5 [build 2/4] RUN echo one",
        "#5 sha256:0ec5a5b465022b7dd3d73b0d998368c99564eb10ecb0173c785f45e78f0ac2dd",
        "#5 CACHED",
        "#6 [3/4] COPY app.txt /app.txt",
        "#6 CACHED",
        "#7 [4/4] RUN make",
        "#7 0.5 built",
        "#7 DONE 0.6s",
    ]:
        progress.feed(line)
    assert progress.steps == 4
    assert progress.cached_steps == 2
    assert progress.failed is None
    assert list(progress.tail) == [
        "#6 [3/4] COPY app.txt /app.txt",
        "#6 CACHED",
        "#7 [4/4] RUN make",
        "#7 0.5 built",
        "#7 DONE 0.6s",
    ]


def test_the_first_step_past_from_is_told_once() -> None:
    """BuildKit's own vertices and FROM come before it; later steps are not told again."""
    told: list[str] = []
    progress = buildkit.PlainProgress(tail_lines=5, on_first_step=lambda: told.append("now"))
    for line in [
        "#1 [internal] load build definition from Dockerfile",
        "#3 importing cache manifest from 127.0.0.1:5000/web:cache-test",
        "#4 [deps 1/3] FROM docker.io/library/node:20",
        "#4 CACHED",
    ]:
        progress.feed(line)
    assert told == []
    for line in ["#5 [deps 2/3] COPY package.json .", "#5 CACHED", "#6 [deps 3/3] RUN npm ci"]:
        progress.feed(line)
    assert told == ["now"]
