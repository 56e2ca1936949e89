"""`reconciler run APP -- COMMAND`: one task of the task definition a service of the app runs
now, launched like that service, COMMAND in one of its containers, awaited.

It writes nothing but the RunTask (and the StopTask of a timeout): no task definition is
registered, the app's memory is not touched. Its startedBy (`reconciler-run/APP`) differs
from the pre-deploy stage's (`reconciler/APP`), so a daemon looking for its own migration
task never takes an operator's task for it. RunTask carries a clientToken made for this run,
so botocore retrying a RunTask whose answer was lost starts no second task.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.adapters.ports import EcsPort
from reconciler.adapters.values import TaskRunRequest
from reconciler.app import tasks
from reconciler.app.stages.observe import managed_images
from reconciler.config import AppConfig
from reconciler.decisions.model import TaskState
from reconciler.errors import ConfigError

STARTED_BY = "reconciler-run"


@dataclass(frozen=True)
class OneOff:
    """A one-off task started: which, of what, where its output goes."""

    cluster: str
    task: str
    task_definition: str
    container: str
    logs: tasks.LogLocation | None


@dataclass(frozen=True)
class Ended:
    """How a one-off task ended: the container's exit code, or why it has none."""

    exit_code: int | None
    reason: str  # one line; "" when the container exited 0


def service_of(app: AppConfig, service: str | None) -> str:
    """The service whose task definition and launch the task copies: `service`, which must
    be one of the app's, or the app's first."""
    names = app.service_names
    if service is None:
        return names[0]
    if service not in names:
        raise ConfigError(
            [f"app {app.name!r} has no service {service!r}; it has {', '.join(names)}"]
        )
    return service


async def start(
    ecs: EcsPort,
    app: AppConfig,
    *,
    command: Sequence[str],
    service: str | None = None,
    container: str | None = None,
) -> OneOff:
    """Start COMMAND in a task of the live task definition of the app's `service`."""
    name = service_of(app, service)
    state = await ecs.describe_service(app.cluster, name)
    definition, _tags = await ecs.task_definition(state.task_definition)
    wanted = container or next(iter(managed_images(app, definition)))
    chosen = tasks.container_of(definition, wanted=wanted, arn=state.task_definition)
    request = TaskRunRequest(
        cluster=app.cluster,
        task_definition=state.task_definition,
        container=chosen,
        command=tuple(command),
        started_by=tasks.started_by(STARTED_BY, app.name),
        launch=state.launch,
        client_token=uuid.uuid4().hex,
    )
    task = await ecs.run_task(request)
    return OneOff(
        cluster=app.cluster,
        task=task,
        task_definition=state.task_definition,
        container=chosen,
        logs=tasks.log_location(definition, container=chosen, task=task),
    )


async def await_end(
    ecs: EcsPort, run: OneOff, *, stop_after: float | None, polls: tuple[float, ...]
) -> Ended:
    """Wait for the task to stop (stopping it after `stop_after` seconds, when given)."""
    limit = float("inf") if stop_after is None else stop_after
    state: TaskState | None = await tasks.await_stopped(
        ecs,
        cluster=run.cluster,
        task=run.task,
        limit=limit,
        polls=polls,
        reason="reconciler run: timed out",
    )
    code = state.exit_codes.get(run.container) if state is not None else None
    if code == 0:
        return Ended(exit_code=0, reason="")
    why = tasks.failure(state, what="task", task=run.task, container=run.container, timeout=limit)
    return Ended(exit_code=code, reason=why)
