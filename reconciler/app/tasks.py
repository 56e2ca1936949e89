"""One-off ECS tasks, as the pre-deploy stage and `reconciler run` start them: the container
a command runs in, waiting for the task to stop, why it failed, where its logs are.

Both launch the task like the service (TaskRunRequest with the service's TaskLaunch) and
judge it by that one container's exit code.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from reconciler.adapters.ports import EcsPort
from reconciler.aio import backoff
from reconciler.decisions.model import TaskState
from reconciler.errors import ManifestError, TransientError

log = structlog.get_logger("reconciler.pass")
STARTED_BY_LIMIT = 36  # ECS refuses a longer startedBy


def started_by(kind: str, app: str) -> str:
    """The task's startedBy: `kind/app`, cut to what ECS takes. Kinds differ in their first
    characters, so a cut never makes two kinds alike."""
    return f"{kind}/{app}"[:STARTED_BY_LIMIT]


def container_of(definition: Mapping[str, Any], *, wanted: str, arn: str) -> str:
    """`wanted` when it is a container of the task definition; ManifestError otherwise."""
    names = [c.get("name") for c in definition.get("containerDefinitions", [])]
    if wanted not in names:
        known = ", ".join(str(n) for n in names) or "none"
        raise ManifestError(f"{wanted!r} is not a container of {arn} (it has {known})")
    return wanted


async def await_stopped(
    ecs: EcsPort,
    *,
    cluster: str,
    task: str,
    limit: float,
    polls: tuple[float, ...],
    reason: str,
) -> TaskState | None:
    """The task once STOPPED; None when it did not stop within `limit` seconds (it is then
    stopped, with `reason`). Losing sight of ECS for a while is not the task's failure."""
    began = time.monotonic()
    deadline = began + max(0.0, limit)
    while True:
        try:
            state = await ecs.describe_task(cluster=cluster, task=task)
        except TransientError as exc:
            log.warning("task_watch_error", task=task, error=str(exc))
        else:
            if state.stopped:
                return state
        if time.monotonic() >= deadline:
            await ecs.stop_task(cluster=cluster, task=task, reason=reason)
            return None
        step = backoff.rollout_step(time.monotonic() - began, polls)
        await backoff.sleep(min(step, max(0.0, deadline - time.monotonic()) + 0.01))


def failure(
    state: TaskState | None, *, what: str, task: str, container: str, timeout: float
) -> str:
    """Why the task `what` names did not end with `container` exiting 0, in one line."""
    if state is None:
        return f"{what} {task} did not finish within {timeout:g}s and was stopped"
    code = state.exit_codes.get(container)
    if code is None:
        why = ": ".join(p for p in (state.stop_code, state.stopped_reason) if p) or "no exit code"
        extra = state.container_reasons.get(container)
        return f"{what} {task} stopped before {container} ran: {why}" + (
            f" ({extra})" if extra else ""
        )
    return f"{what} {task}: {container} exited {code}" + (
        f" ({state.stopped_reason})" if state.stopped_reason else ""
    )


@dataclass(frozen=True)
class LogLocation:
    """Where CloudWatch keeps a container's output (the awslogs driver)."""

    group: str
    stream: str | None  # None without awslogs-stream-prefix: ECS names no stream then

    def __str__(self) -> str:
        where = f"CloudWatch group {self.group}"
        return where + (f", stream {self.stream}" if self.stream else "")


def log_location(definition: Mapping[str, Any], *, container: str, task: str) -> LogLocation | None:
    """Where the task's `container` logs, when it logs to CloudWatch; ECS names the stream
    `prefix/container/task-id`."""
    for entry in definition.get("containerDefinitions", []):
        if entry.get("name") != container:
            continue
        config = entry.get("logConfiguration") or {}
        options = config.get("options") or {}
        if config.get("logDriver") != "awslogs" or "awslogs-group" not in options:
            return None
        prefix = options.get("awslogs-stream-prefix")
        stream = f"{prefix}/{container}/{task.rsplit('/', 1)[-1]}" if prefix else None
        return LogLocation(group=str(options["awslogs-group"]), stream=stream)
    return None
