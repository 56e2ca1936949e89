"""Test containers: one command in a new container of an image, within its limits (memory,
CPUs, processes, no capabilities, a read-only root), its output read live, killed at its
deadline and removed however the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from aiodocker import Docker
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from reconciler.adapters import buildkit
from reconciler.adapters.engine_api import ENGINE_ERRORS, LOG_TAIL_LINES, engine_errors, one_line
from reconciler.adapters.values import ContainerRun
from reconciler.decisions.model import TestRun
from reconciler.errors import BuildFailed

MIB = 1024 * 1024
SIGKILLED = 137  # the exit status of a process killed by SIGKILL (the OOM killer's signal)
OOM_LOOKS, OOM_LOOK_DELAY = 6, 0.25  # asks of the engine whether the kernel's OOM kill did it


async def run_container(
    docker: Docker, request: ContainerRun, *, on_line: Callable[[str], None]
) -> TestRun:
    """Run `request.command` in a new container of its image until it exits or its timeout
    passes.

    Each line of its stdout and stderr goes to `on_line` as it comes, cut at
    buildkit.LINE_CAP characters; only the last lines are kept, for the TestRun's tail.
    At the timeout the container is killed (exit_code None, timed_out True). Past its memory
    limit a process of it is killed, and a non-zero exit says so (oom_killed). The container
    is removed however this ends, cancellation included. Raises BuildFailed when `image`
    does not exist or the engine refuses the container's settings, DockerUnavailable when
    the engine cannot be reached.
    """
    image = request.image
    config: dict[str, Any] = {
        "Image": image,
        "Cmd": list(request.command),
        "Env": [f"{name}={value}" for name, value in request.env.items()],
        "Tty": False,
        "OpenStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
        "Labels": {"org.reconciler.role": "test"},
        "HostConfig": host_config(request),
    }
    if request.user:
        config["User"] = request.user
    with engine_errors(f"test run of {image}"):
        try:
            container = await docker.containers.create(config)
        except DockerError as exc:
            if exc.status == 404 and "image" in exc.message.lower():
                message = one_line(exc.message)
                raise BuildFailed(
                    f"test image {image} does not exist: {message}", log_tail=[message]
                ) from exc
            if exc.status == 400:
                # The engine refused the container as asked (cpus past the host's count,
                # say): retrying the same request would be refused again.
                message = one_line(exc.message)
                raise BuildFailed(
                    f"test container of {image} refused: {message}", log_tail=[message]
                ) from exc
            raise
    try:
        outcome = await _attached(container, image=image, seconds=request.timeout, on_line=on_line)
    except BaseException:
        await _remove_quietly(container)
        raise
    with engine_errors(f"removal of the test container of {image}"):
        await container.delete(force=True)
    return outcome


def host_config(request: ContainerRun) -> dict[str, Any]:
    """The engine's HostConfig for a test container: its network and its limits.

    A test that forks without end or eats memory fails alone, as a killed or failing
    command, and the build host stays up.
    """
    memory = request.memory_mb * MIB
    host: dict[str, Any] = {
        "NetworkMode": request.network,
        # The output is read live through attach; a log driver would also write all of
        # it to the engine's disk (a chatty test: gigabytes of JSON lines).
        "LogConfig": {"Type": "none", "Config": {}},
        "Memory": memory,
        "MemorySwap": memory,  # the same figure: no swap beyond the limit
        "NanoCpus": round(request.cpus * 1e9),
        "PidsLimit": request.pids,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "ReadonlyRootfs": request.read_only,
    }
    if request.read_only:
        # A tmpfs's pages count toward the container's memory, so the limit bounds it too.
        tmp = "/tmp"  # noqa: S108 - the container's own /tmp, not the host's
        host["Tmpfs"] = {tmp: f"rw,nosuid,nodev,size={request.memory_mb}m,mode=1777"}
    return host


async def _attached(
    container: DockerContainer,
    *,
    image: str,
    seconds: float,
    on_line: Callable[[str], None],
) -> TestRun:
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)

    def emit(lines: list[str]) -> None:
        for line in lines:
            on_line(line)
        tail.extend(lines)

    limit = asyncio.timeout(seconds)
    try:
        async with limit:
            with engine_errors(f"test run of {image}"):
                # Attached before the start, so not a line of output is missed.
                async with container.attach(stdout=True, stderr=True) as stream:
                    try:
                        await container.start()
                    except DockerError as exc:
                        if not _cannot_start(exc):
                            raise
                        # The command (or the user) is not in the image: the test
                        # failed, as a shell would say with exit 127.
                        emit([one_line(exc.message)])
                        return TestRun(exit_code=127, timed_out=False, tail=tuple(tail))
                    # One splitter per stream: a partial stdout line must not be joined
                    # to the stderr line that arrives in between.
                    splitters = {1: buildkit.LineSplitter(), 2: buildkit.LineSplitter()}
                    while (message := await stream.read_out()) is not None:
                        splitter = splitters.get(message.stream, splitters[1])
                        emit(splitter.feed(message.data))
                    for splitter in splitters.values():
                        emit(splitter.close())
                status = await container.wait()
    except TimeoutError:
        if not limit.expired():
            raise
        # The kill may find it already gone; the removal that follows settles it either way.
        with contextlib.suppress(*ENGINE_ERRORS):
            await container.kill()
        return TestRun(exit_code=None, timed_out=True, tail=tuple(tail))
    exit_code = int(status["StatusCode"])
    oom_killed = exit_code != 0 and await _oom_killed(container, image=image, code=exit_code)
    return TestRun(exit_code=exit_code, timed_out=False, tail=tuple(tail), oom_killed=oom_killed)


async def _oom_killed(container: DockerContainer, *, image: str, code: int) -> bool:
    """Whether the engine killed a process of the (stopped) container at its memory limit.

    The engine hears of the kernel's OOM kill apart from the exit, and may hear of it a
    moment after: a container that died of SIGKILL (137) is asked again for a little while.
    """
    looks = OOM_LOOKS if code == SIGKILLED else 1
    for look in range(looks):
        if look:
            await asyncio.sleep(OOM_LOOK_DELAY)
        with engine_errors(f"inspection of the test container of {image}"):
            info = await container.show()
        if info.get("State", {}).get("OOMKilled", False):
            return True
    return False


async def _remove_quietly(container: DockerContainer) -> None:
    """Force-remove a test container on the way out of a failed or cancelled run.

    Shielded, so a cancellation does not leave the container behind; an engine error is not
    raised over the exception already on its way out.
    """
    removal = asyncio.ensure_future(container.delete(force=True))
    try:
        await asyncio.shield(removal)
    except ENGINE_ERRORS:
        pass
    except asyncio.CancelledError:
        # Cancelled again while removing: the removal goes on without us.
        removal.add_done_callback(_retrieve)
        raise


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _cannot_start(exc: DockerError) -> bool:
    """The engine refused to start a container because its command cannot be run, or its
    user is not in the image."""
    text = exc.message.lower()
    if exc.status not in {400, 500}:
        return False
    if "unable to find user" in text:
        return True
    return (
        "executable file not found" in text
        or "no such file or directory" in text
        or "permission denied" in text
    ) and "exec" in text
