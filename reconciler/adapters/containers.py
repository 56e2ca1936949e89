"""Test containers: one command in a new container of an image, its output read live, killed
at its deadline and removed however the run ends.
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


async def run_container(
    docker: Docker, request: ContainerRun, *, on_line: Callable[[str], None]
) -> TestRun:
    """Run `request.command` in a new container of its image until it exits or its timeout
    passes.

    Each line of its stdout and stderr goes to `on_line` as it comes, cut at
    buildkit.LINE_CAP characters; only the last lines are kept, for the TestRun's tail.
    At the timeout the container is killed (exit_code None, timed_out True). The container
    is removed however this ends, cancellation included. Raises BuildFailed when `image`
    does not exist, DockerUnavailable when the engine cannot be reached.
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
        "HostConfig": {
            "NetworkMode": request.network,
            # The output is read live through attach; a log driver would also write all
            # of it to the engine's disk (a chatty test: gigabytes of JSON lines).
            "LogConfig": {"Type": "none", "Config": {}},
        },
    }
    with engine_errors(f"test run of {image}"):
        try:
            container = await docker.containers.create(config)
        except DockerError as exc:
            if exc.status == 404 and "image" in exc.message.lower():
                message = one_line(exc.message)
                raise BuildFailed(
                    f"test image {image} does not exist: {message}", log_tail=[message]
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
                        # The command is not in the image (or not executable): the
                        # test failed, as a shell would say with exit 127.
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
    return TestRun(exit_code=int(status["StatusCode"]), timed_out=False, tail=tuple(tail))


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
    """The engine refused to start a container because its command cannot be run."""
    text = exc.message.lower()
    return (
        exc.status in {400, 500}
        and (
            "executable file not found" in text
            or "no such file or directory" in text
            or "permission denied" in text
        )
        and "exec" in text
    )
