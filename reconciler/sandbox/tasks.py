"""One-off task lifecycles for moto's ECS backend.

moto's RunTask makes a task RUNNING at once; each DescribeTasks then steps it towards STOPPED
while its desiredStatus stays RUNNING, and it never gets a stop code or an exit code. A client
that runs a command as a task and waits for it to end (a migration before a deploy, say) can
therefore never see one succeed, fail, fail to start or be stopped. `TaskController.install`
wraps RunTask, DescribeTasks, ListTasks and StopTask of `EC2ContainerServiceBackend` so that a
task started with a `startedBy` goes PROVISIONING -> PENDING -> RUNNING -> STOPPED according to
the `TaskScenario` of its cluster, and records every RunTask call so tests can check what was
asked for.

As in rollout.py, progression is lazy: it is evaluated whenever DescribeTasks, ListTasks or
StopTask looks at a cluster, from `time.monotonic()` since the RunTask, and the wrappers only
act on requests served by a `SandboxAws` (see `TaskController.serving`, and patching.py). They
run under the rollout controller's lock, since both change the same moto task tables.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ecs.exceptions import InvalidParameterException
from moto.ecs.models import Container, EC2ContainerServiceBackend, Task, TaskDefinition
from moto.ecs.responses import EC2ContainerServiceResponse

from reconciler.sandbox.patching import Patches, bound

# What ECS reports for a task whose essential container exited by itself.
_EXITED_CODE = "EssentialContainerExited"
_EXITED_REASON = "Essential container in task exited"
# A container killed by StopTask: SIGTERM was ignored until the stop timeout, then SIGKILL.
_KILLED_EXIT_CODE = 128 + 9


@dataclass(frozen=True)
class TaskScenario:
    """What the tasks RunTask starts next in a cluster do, timed from their RunTask."""

    exit_code: int = 0  # of the container the command runs in; the others exit 0
    after: float = 0.5  # seconds until the task is STOPPED
    starting: float = 0.1  # seconds until RUNNING: half PROVISIONING, then PENDING
    # STOPPED at `after` with stop code TaskFailedToStart, an image pull error and no exit codes.
    never_starts: bool = False
    # RUNNING until StopTask, which stops it with stop code UserInitiated and exit code 137.
    hang: bool = False
    # RunTask starts nothing and answers with this failure reason ("RESOURCE:MEMORY", say).
    failure: str = ""

    def __post_init__(self) -> None:
        if self.after < 0 or self.starting < 0:
            raise ValueError("a task cannot stop or start before it is run")
        if self.never_starts and self.hang:
            raise ValueError("a task that never starts cannot hang while running")
        if not 0 <= self.exit_code <= 255:
            raise ValueError("an exit code is between 0 and 255")


@dataclass(frozen=True)
class StartedTask:
    """One RunTask call as the sandbox received it, and what it answered."""

    cluster: str  # by name
    task_definition: str  # as the request named it
    started_by: str
    overrides: Mapping[str, Any]
    launch_type: str | None
    capacity_provider_strategy: tuple[Mapping[str, Any], ...]
    network_configuration: Mapping[str, Any] | None
    platform_version: str | None
    count: int
    task_arns: tuple[str, ...]
    failures: tuple[str, ...]  # the reasons RunTask answered instead of tasks

    @property
    def commands(self) -> dict[str, tuple[str, ...]]:
        """Container name -> the command the overrides give it."""
        found: dict[str, tuple[str, ...]] = {}
        for override in self.overrides.get("containerOverrides") or []:
            if override.get("command") is not None:
                found[str(override.get("name"))] = tuple(override["command"])
        return found


# What the controller whose sandbox is serving the request does to moto's ECS.
_PATCHES: Patches[TaskController] = Patches("sandbox_tasks")
# RunTask failures the backend decided on, for the response to carry (moto's has none).
_FAILURES: ContextVar[list[dict[str, str]] | None] = ContextVar("sandbox_failures", default=None)


class TaskController:
    """Per-cluster task scenarios plus the record of every RunTask call."""

    def __init__(self, lock: threading.RLock | None = None) -> None:
        # Shared with the RolloutController: its DescribeTasks and ListTasks wrappers change
        # the same moto task tables on other werkzeug threads.
        self.lock = lock if lock is not None else threading.RLock()
        self._default = TaskScenario()
        self._scenarios: dict[str, TaskScenario] = {}
        self._started: list[StartedTask] = []
        # (cluster, clientToken) -> the tasks RunTask started for it: ECS's idempotency.
        self.by_token: dict[tuple[str, str], list[Task]] = {}

    def set_default(self, scenario: TaskScenario) -> None:
        """The scenario for every cluster without one of its own."""
        with self.lock:
            self._default = scenario

    def set_scenario(self, cluster: str, scenario: TaskScenario) -> None:
        """The scenario for tasks started from now on in `cluster` (name or ARN).

        A task keeps the scenario it was started with, so a test can start tasks of different
        kinds one after the other in one cluster.
        """
        with self.lock:
            self._scenarios[_cluster_name(cluster)] = scenario

    def scenario_for(self, cluster: str) -> TaskScenario:
        with self.lock:
            return self._scenarios.get(_cluster_name(cluster), self._default)

    def started(self, cluster: str | None = None) -> list[StartedTask]:
        """The RunTask calls answered so far, oldest first; only those for `cluster` if given."""
        with self.lock:
            if cluster is None:
                return list(self._started)
            name = _cluster_name(cluster)
            return [record for record in self._started if record.cluster == name]

    def reset(self) -> None:
        """Forget scenarios and records (moto's own state is reset by `SandboxAws.reset`)."""
        with self.lock:
            self._default = TaskScenario()
            self._scenarios.clear()
            self._started.clear()
            self.by_token.clear()

    def serving(self) -> AbstractContextManager[None]:
        """Apply task lifecycles to the moto calls made inside this block (one request)."""
        return _PATCHES.serving(self)

    def install(self) -> None:
        """Wrap moto's ECS backend (once per process; later calls change nothing)."""
        _PATCHES.install()

    def _record(self, record: StartedTask) -> None:
        self._started.append(record)


def _cluster_name(cluster: str) -> str:
    return cluster.rpartition("/")[2]


# --- per-task state, kept on moto's Task objects (so moto's reset drops it too) ---


@dataclass
class _Run:
    started: float
    scenario: TaskScenario
    command_container: str  # the container whose exit code is the scenario's


class _OneOffTask(Task):
    """A task whose status only the sandbox sets.

    moto's own status follows its state manager, one step per DescribeTasks; this one follows
    the task's scenario instead. moto's RunTask builds plain `Task` objects itself, so the ones
    with a `startedBy` are turned into this class after it returns (see `_adopt`).
    """

    sandbox_run: _Run

    @property
    def status(self) -> str | None:
        return self._status

    @status.setter
    def status(self, value: str) -> None:
        self._status = value


def _container(base: Container, task: Task, definition: Mapping[str, Any]) -> Container:
    # moto models only the first container of a task, and gives it the task definition's ARN
    # as its taskArn and exit code 0 before it ever ran; ECS reports every container, with
    # no exit code until it stopped.
    container = copy.copy(base)
    container.container_arn = f"{task.task_arn.replace(':task/', ':container/', 1)}/{uuid.uuid4()}"
    container.task_arn = task.task_arn
    container.name = definition.get("name")
    container.image = definition.get("image")
    container.cpu = definition.get("cpu", 0)
    container.memory = definition.get("memory")
    container.environment = definition.get("environment")
    container.command = definition.get("command")
    container.last_status = "PENDING"
    _set_exit(container, None, None)
    return container


def _adopt(task: Task, task_definition: TaskDefinition, scenario: TaskScenario) -> None:
    """Give a task moto just started the sandbox's lifecycle, from PROVISIONING."""
    definitions = list(task_definition.container_definitions)
    overridden = [
        str(o.get("name"))
        for o in (task.overrides or {}).get("containerOverrides") or []
        if o.get("command") is not None
    ]
    essential = [str(d.get("name")) for d in definitions if d.get("essential", True)]
    command_container = next(iter(overridden + essential), str(definitions[0].get("name")))
    task.__class__ = _OneOffTask
    one_off = task
    assert isinstance(one_off, _OneOffTask)
    one_off.sandbox_run = _Run(time.monotonic(), scenario, command_container)
    one_off.status = "PROVISIONING"
    setattr(one_off, "created_at", utcnow())  # noqa: B010 (moto's Task has no such field)
    base = one_off.containers[0]
    one_off.containers = [_container(base, one_off, d) for d in definitions]


def _settle(backend: EC2ContainerServiceBackend, task: _OneOffTask, now: float) -> None:
    """Move the task to where its scenario says it is by now."""
    if task.status == "STOPPED":
        return
    run = task.sandbox_run
    scenario = run.scenario
    elapsed = now - run.started
    if scenario.never_starts:
        if elapsed >= scenario.after:
            reason = _pull_error(task)
            _stop(backend, task, "TaskFailedToStart", reason, exit_codes=None, reason=reason)
        else:
            task.status = "PROVISIONING" if elapsed < scenario.starting / 2 else "PENDING"
        return
    if elapsed < scenario.starting / 2:
        task.status = "PROVISIONING"
    elif elapsed < scenario.starting:
        task.status = "PENDING"
    elif scenario.hang or elapsed < max(scenario.after, scenario.starting):
        if task.status != "RUNNING":
            task.status = "RUNNING"
            setattr(task, "started_at", utcnow())  # noqa: B010
            for container in task.containers:
                container.last_status = "RUNNING"
    else:
        codes = {
            str(c.name): scenario.exit_code if c.name == run.command_container else 0
            for c in task.containers
        }
        _stop(backend, task, _EXITED_CODE, _EXITED_REASON, exit_codes=codes)


def _pull_error(task: Task) -> str:
    images = [str(c.image) for c in task.containers]
    image = images[0] if images else "the image"
    return (
        "CannotPullContainerError: pull image manifest has been retried 5 time(s): "
        f"failed to resolve ref {image}: not found"
    )


def _stop(
    backend: EC2ContainerServiceBackend,
    task: _OneOffTask,
    stop_code: str,
    stopped_reason: str,
    *,
    exit_codes: Mapping[str, int] | None,
    reason: str | None = None,
) -> None:
    if task.desired_status != "STOPPED":
        _release(backend, task)  # moto's StopTask releases it itself
    now = utcnow()
    task.status = "STOPPED"
    task.desired_status = "STOPPED"
    task.stopped_reason = stopped_reason
    for name, value in (
        ("stop_code", stop_code),
        ("stopping_at", now),
        ("execution_stopped_at", now),
        ("stopped_at", now),
    ):
        setattr(task, name, value)
    for container in task.containers:
        container.last_status = "STOPPED"
        code = None if exit_codes is None else exit_codes.get(str(container.name))
        _set_exit(container, code, reason)


def _set_exit(container: Container, exit_code: int | None, reason: str | None) -> None:
    # moto types exitCode as int and has no reason; ECS leaves out both until they are known.
    setattr(container, "exitCode", exit_code)  # noqa: B010
    setattr(container, "reason", reason)  # noqa: B010


def _release(backend: EC2ContainerServiceBackend, task: Task) -> None:
    """Give back the container instance resources moto's RunTask took for an EC2 task."""
    if not task.container_instance_arn or task.resource_requirements is None:
        return
    instances = backend.container_instances.get(task.cluster_name, {})
    instance = instances.get(task.container_instance_arn.split("/")[-1])
    if instance is None:
        return
    backend.update_container_instance_resources(instance, task.resource_requirements, removing=True)
    cluster = backend._get_cluster(task.cluster_name)
    backend.update_cluster_resources(cluster, -1, task_state="RUNNING")


def _settle_cluster(backend: EC2ContainerServiceBackend, cluster_name: str) -> None:
    now = time.monotonic()
    for task in list(backend.tasks.get(cluster_name, {}).values()):
        if isinstance(task, _OneOffTask):
            _settle(backend, task, now)


def _find_task(backend: EC2ContainerServiceBackend, cluster_name: str, task: str) -> Task | None:
    task_id = task.rpartition("/")[2]
    for arn, found in backend.tasks.get(cluster_name, {}).items():
        if task in (arn, found.id) or arn.rpartition("/")[2] == task_id:
            return found
    return None


# --- the wrapped backend methods ---


@_PATCHES.around(EC2ContainerServiceBackend, "run_task")
def _run_task(
    controller: TaskController,
    original: Callable[..., list[Task]],
    backend: EC2ContainerServiceBackend,
    *args: Any,
    **kwargs: Any,
) -> list[Task]:
    call = bound(original, backend, *args, **kwargs)
    arguments = call.arguments
    cluster = backend._get_cluster(arguments["cluster_str"] or "default")
    scenario = controller.scenario_for(cluster.name)
    failures: list[str] = []
    if scenario.failure:
        backend.describe_task_definition(arguments["task_definition_str"])  # still validated
        failures.append(scenario.failure)
        answer = _FAILURES.get()
        if answer is not None:
            answer.append({"reason": scenario.failure})
        tasks: list[Task] = []
    else:
        try:
            tasks = original(*call.args, **call.kwargs)
        except InvalidParameterException:
            raise
        except Exception as exc:
            # moto raises a bare Exception (an HTTP 500, which clients retry as a server
            # error) where ECS refuses the request.
            if str(exc).startswith("No instances found in cluster"):
                raise InvalidParameterException(
                    "No Container Instances were found in your cluster."
                ) from exc
            raise
        if arguments["started_by"]:
            task_definition = backend.describe_task_definition(arguments["task_definition_str"])
            for task in tasks:
                _adopt(task, task_definition, scenario)
    strategy = arguments["capacity_provider_strategy"] or []
    controller._record(
        StartedTask(
            cluster=cluster.name,
            task_definition=str(arguments["task_definition_str"]),
            started_by=str(arguments["started_by"] or ""),
            overrides=copy.deepcopy(arguments["overrides"] or {}),
            launch_type=arguments["launch_type"] or None,
            capacity_provider_strategy=tuple(copy.deepcopy(s) for s in strategy),
            network_configuration=copy.deepcopy(arguments["networking_configuration"]) or None,
            platform_version=arguments["platform_version"] or None,
            count=int(arguments["count"]),
            task_arns=tuple(task.task_arn for task in tasks),
            failures=tuple(failures),
        )
    )
    return tasks


@_PATCHES.around(EC2ContainerServiceBackend, "describe_tasks")
def _describe_tasks(
    controller: TaskController,
    original: Callable[..., list[Task]],
    backend: EC2ContainerServiceBackend,
    cluster_str: str,
    tasks: list[str],
) -> list[Task]:
    _settle_cluster(backend, backend._get_cluster(cluster_str).name)
    return original(backend, cluster_str, tasks)


@_PATCHES.around(EC2ContainerServiceBackend, "list_tasks")
def _list_tasks(
    controller: TaskController,
    original: Callable[..., list[Task]],
    backend: EC2ContainerServiceBackend,
    *args: Any,
    **kwargs: Any,
) -> list[Task]:
    call = bound(original, backend, *args, **kwargs)
    cluster_str = call.arguments["cluster_str"]
    clusters = [backend._get_cluster(cluster_str).name] if cluster_str else list(backend.tasks)
    for name in clusters:
        # A task that ended by itself is no longer listed under desiredStatus RUNNING.
        _settle_cluster(backend, name)
    return original(*call.args, **call.kwargs)


@_PATCHES.around(EC2ContainerServiceBackend, "stop_task")
def _stop_task(
    controller: TaskController,
    original: Callable[..., Task],
    backend: EC2ContainerServiceBackend,
    *args: Any,
    **kwargs: Any,
) -> Task:
    call = bound(original, backend, *args, **kwargs)
    cluster_str, task_str = str(call.arguments["cluster_str"]), str(call.arguments["task_str"])
    reason: str | None = call.arguments["reason"]
    cluster = backend._get_cluster(cluster_str)
    task = _find_task(backend, cluster.name, task_str)
    if task is None:
        # moto raises a bare Exception (an HTTP 500) here.
        raise InvalidParameterException("The referenced task was not found.")
    if not isinstance(task, _OneOffTask):
        return original(backend, cluster_str, task_str, reason)
    _settle(backend, task, time.monotonic())
    if task.status == "STOPPED":
        return task  # ECS leaves a stopped task as it ended
    was_running = task.status == "RUNNING"
    reason = reason or "Task stopped by user"
    original(backend, cluster_str, task_str, reason)
    codes = {str(c.name): _KILLED_EXIT_CODE for c in task.containers} if was_running else None
    _stop(backend, task, "UserInitiated", reason, exit_codes=codes)
    return task


@_PATCHES.around(EC2ContainerServiceResponse, "run_task")
def _answer_run_task(
    controller: TaskController,
    original: Callable[..., Any],
    response: EC2ContainerServiceResponse,
) -> Any:
    """RunTask as ECS answers it: a clientToken seen before gets the task it started then
    (moto ignores the token and starts another), and `failures` say why nothing started
    (moto's are always empty)."""
    token = response._get_param("clientToken")
    cluster = _cluster_name(str(response._get_param("cluster", "default")))
    if token:
        with controller.lock:
            known = controller.by_token.get((cluster, str(token)))
        if known is not None:
            return ActionResult({"tasks": list(known), "failures": []})
    failures: list[dict[str, str]] = []
    reset = _FAILURES.set(failures)
    try:
        result = original(response)
    finally:
        _FAILURES.reset(reset)
    if failures:
        result.result["failures"] = failures
    elif token:
        with controller.lock:
            controller.by_token[(cluster, str(token))] = list(result.result["tasks"])
    return result
