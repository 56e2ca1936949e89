"""DockerEngine.run: a test command in a container of the built image, on the real engine.

Each test runs its commands in a busybox image of its own (a LABEL with a unique value), so
`docker ps -a --filter label=...` sees exactly the containers that test made.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reconciler.adapters import buildkit
from reconciler.adapters.docker import DockerEngine
from reconciler.adapters.engine_api import LOG_TAIL_LINES
from reconciler.adapters.values import BuildRequest, ContainerRun
from reconciler.decisions.model import TestRun
from reconciler.errors import BuildFailed, DockerUnavailable


@pytest.fixture
async def engine(docker_engine: str) -> AsyncIterator[DockerEngine]:
    client = DockerEngine(url=docker_engine)
    yield client
    await client.close()


class Image:
    """A busybox image of this test's own, and the containers made from it."""

    def __init__(self, name: str, label: str) -> None:
        self.name = name
        self.label = label

    def remove(self) -> None:
        subprocess.run(["docker", "image", "rm", "-f", self.name], capture_output=True, check=False)

    def containers(self) -> list[str]:
        out = subprocess.run(
            ["docker", "ps", "-a", "-q", "--filter", f"label=reconciler-test-run={self.label}"],
            capture_output=True,
            check=True,
            text=True,
        )
        return out.stdout.split()


@pytest.fixture
async def image(engine: DockerEngine, base_image: str, tmp_path: Path) -> AsyncIterator[Image]:
    label = uuid.uuid4().hex
    name = f"reconciler-test/run-{label[:12]}:1"
    dockerfile = f"FROM {base_image}\nLABEL reconciler-test-run={label}\n".encode()
    context = tmp_path / "context.tar"
    with tarfile.open(context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    with context.open("rb") as ctx:
        await engine.build(
            ctx,
            BuildRequest(dockerfile="Dockerfile", tag=name, build_args={}, target="", labels={}),
        )
    made = Image(name, label)
    yield made
    assert made.containers() == [], "a test container was left behind"
    made.remove()


async def run(
    engine: DockerEngine,
    image: Image,
    script: str,
    *,
    env: dict[str, str] | None = None,
    network: str = "none",
    timeout: float = 60,
    memory_mb: int = 1024,
    cpus: float = 1.0,
    pids: int = 512,
    read_only: bool = True,
    user: str = "",
) -> tuple[TestRun, list[str]]:
    lines: list[str] = []
    outcome = await engine.run(
        ContainerRun(
            image=image.name,
            command=["sh", "-c", script],
            env=env or {},
            network=network,
            timeout=timeout,
            memory_mb=memory_mb,
            cpus=cpus,
            pids=pids,
            read_only=read_only,
            user=user,
        ),
        on_line=lines.append,
    )
    return outcome, lines


async def test_a_command_that_exits_0_passes(engine: DockerEngine, image: Image) -> None:
    outcome, lines = await run(engine, image, "echo hello")
    assert outcome == TestRun(exit_code=0, timed_out=False, tail=("hello",))
    assert lines == ["hello"]
    assert image.containers() == []


async def test_a_failing_command_gives_its_exit_code_and_its_last_lines(
    engine: DockerEngine, image: Image
) -> None:
    script = "for i in $(seq 100); do echo out-$i; done; echo to-stderr >&2; exit 3"
    outcome, lines = await run(engine, image, script)
    assert outcome.exit_code == 3
    assert not outcome.timed_out
    # The engine copies stdout and stderr apart, so how the two interleave is its choice.
    assert "to-stderr" in lines
    assert [line for line in lines if line != "to-stderr"] == [f"out-{i}" for i in range(1, 101)]
    assert outcome.tail == tuple(lines[-LOG_TAIL_LINES:])


async def test_a_command_past_its_timeout_is_killed_and_removed(
    engine: DockerEngine, image: Image
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome, lines = await run(engine, image, "echo started; sleep 60", timeout=1)
    assert loop.time() - started < 15
    assert outcome == TestRun(exit_code=None, timed_out=True, tail=("started",))
    assert lines == ["started"]
    assert image.containers() == []


@pytest.mark.slow
async def test_fifty_megabytes_of_output_keep_memory_bounded(
    engine: DockerEngine, image: Image
) -> None:
    """25 million lines: each reaches on_line, none is kept but the last few."""
    peak = {"rss": 0}
    seen = {"lines": 0, "bytes": 0}
    before = rss_kib()
    peak_was_reset = reset_peak_rss()

    def on_line(line: str) -> None:
        seen["lines"] += 1
        seen["bytes"] += len(line) + 1
        if seen["lines"] % 500_000 == 0:
            peak["rss"] = max(peak["rss"], rss_kib())

    outcome = await engine.run(
        ContainerRun(
            image=image.name,
            command=["sh", "-c", "busybox yes | busybox head -c 50000000"],
            env={},
            network="none",
            timeout=240,
        ),
        on_line=on_line,
    )
    peak["rss"] = max(peak["rss"], rss_kib(), peak_rss_kib() if peak_was_reset else 0)
    assert outcome.exit_code == 0
    assert seen == {"lines": 25_000_000, "bytes": 50_000_000}
    assert outcome.tail == ("y",) * LOG_TAIL_LINES
    growth_mib = (peak["rss"] - before) / 1024
    print(f"RSS before {before} KiB, peak {peak['rss']} KiB: growth {growth_mib:.1f} MiB")
    assert growth_mib < 20


async def test_a_line_without_an_end_is_cut(engine: DockerEngine, image: Image) -> None:
    outcome, lines = await run(
        engine, image, "busybox head -c 1000000 /dev/zero | busybox tr '\\0' a; echo; echo after"
    )
    assert outcome.exit_code == 0
    assert lines == ["a" * buildkit.LINE_CAP + " [line cut]", "after"]


async def test_the_environment_reaches_the_command(engine: DockerEngine, image: Image) -> None:
    outcome, _ = await run(
        engine,
        image,
        'echo "$GREETING"; echo "$EMPTY" | busybox wc -c',
        env={"GREETING": "hello, world = yes", "EMPTY": ""},
    )
    assert outcome.tail == ("hello, world = yes", "1")


async def test_network_none_has_only_loopback(engine: DockerEngine, image: Image) -> None:
    outcome, _ = await run(engine, image, "ls /sys/class/net", network="none")
    assert outcome == TestRun(exit_code=0, timed_out=False, tail=("lo",))


async def test_network_host_is_the_hosts(engine: DockerEngine, image: Image) -> None:
    outcome, _ = await run(engine, image, "ls /sys/class/net", network="host")
    assert outcome.exit_code == 0
    assert "lo" in outcome.tail and len(outcome.tail) > 1


async def test_an_image_that_was_not_built_is_build_failed(engine: DockerEngine) -> None:
    missing = f"reconciler-test/never-built-{uuid.uuid4().hex[:12]}:1"
    with pytest.raises(BuildFailed, match=missing) as caught:
        await engine.run(
            ContainerRun(
                image=missing,
                command=["true"],
                env={},
                network="none",
                timeout=10,
            ),
            on_line=lambda line: None,
        )
    assert "\n" not in str(caught.value)


async def test_a_missing_engine_is_docker_unavailable(tmp_path: Path) -> None:
    engine = DockerEngine(url=f"unix://{tmp_path}/nonexistent.sock")
    with pytest.raises(DockerUnavailable):
        await engine.run(
            ContainerRun(
                image="reconciler-test/busybox:1",
                command=["true"],
                env={},
                network="none",
                timeout=10,
            ),
            on_line=lambda line: None,
        )
    await engine.close()


async def test_a_cancelled_run_removes_its_container(engine: DockerEngine, image: Image) -> None:
    started = asyncio.Event()
    task = asyncio.create_task(
        engine.run(
            ContainerRun(
                image=image.name,
                command=["sh", "-c", "echo up; sleep 60"],
                env={},
                network="none",
                timeout=120,
            ),
            on_line=lambda line: started.set(),
        )
    )
    await asyncio.wait_for(started.wait(), timeout=30)
    assert len(image.containers()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert image.containers() == []


async def test_an_exception_in_on_line_removes_the_container(
    engine: DockerEngine, image: Image
) -> None:
    def refuse(line: str) -> None:
        raise RuntimeError("the reporter broke")

    with pytest.raises(RuntimeError, match="the reporter broke"):
        await engine.run(
            ContainerRun(
                image=image.name,
                command=["sh", "-c", "echo up; sleep 60"],
                env={},
                network="none",
                timeout=120,
            ),
            on_line=refuse,
        )
    assert image.containers() == []


def status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/self/status")


def rss_kib() -> int:
    return status_kib("VmRSS")


def reset_peak_rss() -> bool:
    """Start VmHWM afresh (Linux: clear_refs 5), so it is this test's peak, not the run's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False  # then the samples taken in on_line are what counts
    return True


def peak_rss_kib() -> int:
    return status_kib("VmHWM")


async def test_a_command_the_image_does_not_have_is_a_failed_test_not_an_outage(
    engine: DockerEngine, image: Image
) -> None:
    """The engine cannot start the command: the test fails (exit 127) with its reason, and
    the container is removed."""
    outcome = await engine.run(
        ContainerRun(
            image=image.name,
            command=["/no/such/test-runner"],
            env={},
            network="none",
            timeout=30,
        ),
        on_line=lambda line: None,
    )
    assert (outcome.exit_code, outcome.timed_out, outcome.passed) == (127, False, False)
    assert any("no such file" in line.lower() for line in outcome.tail)


async def test_a_fork_bomb_fails_its_test_alone(engine: DockerEngine, image: Image) -> None:
    """Processes past the default pids limit cannot be made: the test fails within its
    timeout, and the engine still runs the next test."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome, _ = await run(engine, image, "while true; do sleep 600 & done", timeout=60)
    assert not outcome.passed and not outcome.timed_out
    assert any("can't fork" in line for line in outcome.tail)
    # At 512 processes it stops at once; the host's own limits would take far longer.
    assert loop.time() - started < 15
    again, _ = await run(engine, image, "echo still here")
    assert again == TestRun(exit_code=0, timed_out=False, tail=("still here",))


async def test_memory_past_the_limit_is_an_oom_kill(engine: DockerEngine, image: Image) -> None:
    outcome, _ = await run(
        engine, image, "busybox head -c 200m /dev/zero | busybox tail", memory_mb=32
    )
    assert not outcome.passed
    assert outcome.oom_killed


async def test_a_failure_within_the_memory_limit_is_not_an_oom_kill(
    engine: DockerEngine, image: Image
) -> None:
    outcome, _ = await run(engine, image, "exit 1", memory_mb=32)
    assert (outcome.exit_code, outcome.oom_killed) == (1, False)


async def test_the_root_filesystem_is_read_only_but_tmp_is_writable(
    engine: DockerEngine, image: Image
) -> None:
    outcome, _ = await run(engine, image, "echo x > /written")
    assert outcome.exit_code not in {0, None}
    assert any("read-only file system" in line.lower() for line in outcome.tail)
    outcome, _ = await run(engine, image, "echo x > /tmp/written && cat /tmp/written")
    assert outcome == TestRun(exit_code=0, timed_out=False, tail=("x",))


async def test_without_read_only_the_root_filesystem_is_writable(
    engine: DockerEngine, image: Image
) -> None:
    outcome, _ = await run(engine, image, "echo x > /written && cat /written", read_only=False)
    assert outcome == TestRun(exit_code=0, timed_out=False, tail=("x",))


async def test_capabilities_are_dropped(engine: DockerEngine, image: Image) -> None:
    """Root in the container cannot give a file away (CAP_CHOWN is gone)."""
    outcome, _ = await run(engine, image, "touch /tmp/f && busybox chown 1234 /tmp/f")
    assert outcome.exit_code not in {0, None}
    assert any("operation not permitted" in line.lower() for line in outcome.tail)


async def test_the_limits_reach_the_engine(engine: DockerEngine, image: Image) -> None:
    """The container's own view: its memory limit, its pids limit, and its user."""
    script = (
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max 2>/dev/null"
        " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max;"
        " id -u"
    )
    outcome, _ = await run(engine, image, script, memory_mb=64, pids=100, user="1234:1234")
    assert outcome.tail == (str(64 * 1024 * 1024), "100", "1234")


async def test_cpus_the_engine_refuses_are_build_failed_not_an_outage(
    engine: DockerEngine, image: Image
) -> None:
    """More CPUs than the host has: the same request would be refused again, so it is not
    retried as an unavailable engine."""
    with pytest.raises(BuildFailed, match="refused") as caught:
        await run(engine, image, "true", cpus=100_000)
    assert "\n" not in str(caught.value)


async def test_a_user_the_image_does_not_have_is_a_failed_test_not_an_outage(
    engine: DockerEngine, image: Image
) -> None:
    outcome, _ = await run(engine, image, "true", user="nosuchuser")
    assert (outcome.exit_code, outcome.passed) == (127, False)
    assert any("unable to find user nosuchuser" in line for line in outcome.tail)
