"""Rolling-update progression for moto's ECS backend.

moto keeps a single deployment per service that never changes after UpdateService, so a
client that waits for a rollout (the daemon, ecs-deploy) can never see one finish or fail.
`RolloutController.install` wraps a few `EC2ContainerServiceBackend` methods so that a
task-definition change starts a new PRIMARY deployment which later completes, fails with a
circuit-breaker rollback, is rolled back by an alarm, fails to roll back, or sticks, according
to the `Scenario` set for that service. Each rollout also keeps a service deployment record
(deployments.py, which serves ListServiceDeployments and the calls beside it); the record's
lifecycle decides when and how the `deployments` list changes, so both always tell the same
story.

Progression is lazy: it is evaluated whenever DescribeServices, UpdateService, ListTasks,
DescribeTasks or one of the service deployment calls looks at a service, from the
controller's `clock` (`time.monotonic` unless a test sets another) since the update. There
is no background thread, so nothing races the requests and a stuck scenario costs nothing.

The wrappers (patching.py) only act on requests served by a `SandboxAws` (see
`RolloutController.serving`); anything else in the process that uses moto in-process keeps
moto's own behaviour.
"""

from __future__ import annotations

import copy
import dataclasses
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from moto.core.utils import utcnow
from moto.ecs.exceptions import InvalidParameterException
from moto.ecs.models import (
    Container,
    EC2ContainerServiceBackend,
    Service,
    Task,
    TaskDefinition,
)
from moto.ecs.responses import EC2ContainerServiceResponse

from reconciler.sandbox import deployments
from reconciler.sandbox.deployments import Record, StopType
from reconciler.sandbox.hooks import HookAction
from reconciler.sandbox.patching import Patches, bound
from reconciler.sandbox.scenario import Scenario

_DEFAULT_DEPLOYMENT_CONFIGURATION: dict[str, Any] = {
    "deploymentCircuitBreaker": {"enable": False, "rollback": False},
    "maximumPercent": 200,
    "minimumHealthyPercent": 100,
}


# What the controller whose sandbox is serving the request does to moto's ECS.
_PATCHES: Patches[RolloutController] = Patches("sandbox_rollouts")
# The deploymentConfiguration of the CreateService being served, for the backend to keep.
_CREATING: ContextVar[dict[str, Any] | None] = ContextVar("sandbox_creating", default=None)


class RolloutController:
    """Per-service rollout scenarios plus the count of task-definition changing updates."""

    def __init__(self) -> None:
        # moto's models are not thread safe and werkzeug serves requests on many threads:
        # every patched call runs under this lock, so a describe never sees half an update.
        self.lock = threading.RLock()
        self._default = Scenario()
        self._scenarios: dict[tuple[str, str], Scenario] = {}
        self._updates: dict[tuple[str, str], int] = {}
        # Seconds, monotonic: what progression times rollouts by. A test may put a clock of
        # its own here to step through a rollout without waiting for it.
        self.clock: Callable[[], float] = time.monotonic

    def set_default(self, scenario: Scenario) -> None:
        """The scenario for every service without one of its own."""
        with self.lock:
            self._default = scenario

    def set_scenario(self, cluster: str, service: str, scenario: Scenario) -> None:
        """The scenario for one service (cluster and service by name), also mid-rollout."""
        with self.lock:
            self._scenarios[(cluster, service)] = scenario

    def scenario_for(self, cluster: str, service: str) -> Scenario:
        with self.lock:
            return self._scenarios.get((cluster, service), self._default)

    def update_service_count(self, cluster: str, service: str) -> int:
        """How many UpdateService calls changed the task definition of that service."""
        with self.lock:
            return self._updates.get((cluster, service), 0)

    def reset(self) -> None:
        """Forget scenarios and counts (moto's own state is reset by `SandboxAws.reset`)."""
        with self.lock:
            self._default = Scenario()
            self._scenarios.clear()
            self._updates.clear()
            self.clock = time.monotonic

    def serving(self) -> AbstractContextManager[None]:
        """Apply rollout progression to the moto calls made inside this block (one request)."""
        return _PATCHES.serving(self)

    def install(self) -> None:
        """Wrap moto's ECS backend (once per process; later calls change nothing)."""
        _PATCHES.install()

    def look(self, backend: EC2ContainerServiceBackend, service: Service) -> None:
        """Advance the service's rollout to now (under `lock`, inside a request)."""
        _progress(self, backend, service)
        _recount(backend, service)

    def stop_deployment(
        self, backend: EC2ContainerServiceBackend, service: Service, record: Record, how: StopType
    ) -> None:
        """StopServiceDeployment: the record stops, then the service's deployments follow."""
        scenario = self.scenario_for(service.cluster_name, service.name)
        record.stop(how, self.clock(), scenario.rollback)
        self.look(backend, service)

    def continue_deployment(
        self,
        backend: EC2ContainerServiceBackend,
        service: Service,
        record: Record,
        hook_id: str,
        action: HookAction,
    ) -> None:
        """ContinueServiceDeployment: the record goes on from its hook, or rolls back."""
        self.look(backend, service)
        now = self.clock()
        record.resume(hook_id, now)
        if action == "ROLLBACK":
            scenario = self.scenario_for(service.cluster_name, service.name)
            record.stop("ROLLBACK", now, scenario.rollback)
        self.look(backend, service)

    def _count_update(self, cluster: str, service: str) -> None:
        key = (cluster, service)
        self._updates[key] = self._updates.get(key, 0) + 1


# --- per-service state kept on moto's Service objects (so moto's reset drops it too) ---


@dataclass
class _Rollout:
    deployment_id: str  # its entry in the service's `deployments`
    record: Record  # its service deployment, whose lifecycle decides what happens
    decided: bool = False  # the record's ending (failure, alarm, stop) reached the list
    rollback_deployment_id: str | None = None


@dataclass
class _ServiceState:
    rollout: _Rollout | None = None


def _state(service: Service) -> _ServiceState:
    state = getattr(service, "sandbox_state", None)
    if state is None:  # a service created outside the sandbox: take it as steady
        state = _ServiceState()
        service.sandbox_state = state  # type: ignore[attr-defined]
    assert isinstance(state, _ServiceState)
    return state


# --- deployments ---


def _new_deployment(
    service: Service, task_definition: str | None, *, status: str, state: str, running: int
) -> dict[str, Any]:
    deployment_id = f"ecs-svc/{secrets.randbelow(10**19):019d}"
    now = utcnow()
    reason = "completed" if state == "COMPLETED" else "in progress"
    return {
        "id": deployment_id,
        "status": status,
        "taskDefinition": task_definition,
        "desiredCount": service.desired_count,
        "pendingCount": max(service.desired_count - running, 0),
        "runningCount": running,
        "failedTasks": 0,
        "createdAt": now,
        "updatedAt": now,
        "launchType": service.launch_type,
        "platformVersion": service.platform_version,
        "platformFamily": "EC2" if service.launch_type == "EC2" else "FARGATE",
        "networkConfiguration": service.network_configuration or None,
        "rolloutState": state,
        "rolloutStateReason": f"ECS deployment {deployment_id} {reason}.",
    }


def _deployments(service: Service) -> list[dict[str, Any]]:
    # moto types the list from its own literal (dict[str, object]); the values are plain JSON.
    return cast(list[dict[str, Any]], service.deployments)


def _find(service: Service, deployment_id: str) -> dict[str, Any] | None:
    return next((d for d in _deployments(service) if d["id"] == deployment_id), None)


def _wants_rollback(service: Service) -> bool:
    # A `fail` scenario means the circuit breaker tripped. ECS then rolls back, unless the
    # service enables the breaker explicitly without rollback.
    config = getattr(service, "deployment_configuration", None) or {}
    breaker = config.get("deploymentCircuitBreaker") or {}
    return not (breaker.get("enable") and not breaker.get("rollback"))


def _start_rollout(
    controller: RolloutController,
    backend: EC2ContainerServiceBackend,
    service: Service,
    task_definition: str | None,
    *,
    previous: str | None,
) -> dict[str, Any]:
    state = _state(service)
    for deployment in _deployments(service):
        if deployment["status"] == "PRIMARY":
            deployment["status"] = "ACTIVE"  # draining, or superseded when still in progress
            deployment["updatedAt"] = utcnow()
    new = _new_deployment(
        service, task_definition, status="PRIMARY", state="IN_PROGRESS", running=0
    )
    _deployments(service).insert(0, new)
    record = deployments.start_deployment(backend, service, controller.clock(), previous=previous)
    state.rollout = _Rollout(new["id"], record)
    return new


def _progress(
    controller: RolloutController, backend: EC2ContainerServiceBackend, service: Service
) -> None:
    """Advance the service's rollout record, and follow it in the `deployments` list."""
    state = _state(service)
    rollout = state.rollout
    if rollout is None or service.status != "ACTIVE":
        return
    record = rollout.record
    scenario = controller.scenario_for(service.cluster_name, service.name)
    if record.reverts and scenario.revert is not None:
        scenario = dataclasses.replace(scenario, outcome=scenario.revert)
    record.advance(scenario, controller.clock(), breaker_rolls_back=_wants_rollback(service))
    new = _find(service, rollout.deployment_id)
    if record.ending is not None and not rollout.decided:
        rollout.decided = True
        if new is not None:
            _fail(service, rollout, new)
    if not record.done:
        return
    state.rollout = None
    if record.status == "SUCCESSFUL":
        deployments.history(backend, service).stable = record.target
        if new is not None:
            _complete(backend, service, new)
        return
    rollback = _find(service, rollout.rollback_deployment_id or "")
    if record.status == "ROLLBACK_SUCCESSFUL" and rollback is not None:
        _complete(backend, service, rollback, replace=False)


def _complete(
    backend: EC2ContainerServiceBackend,
    service: Service,
    deployment: dict[str, Any],
    *,
    replace: bool = True,
) -> None:
    """The deployment's tasks are all up; when it `replace`s, the others are gone."""
    deployment.update(
        updatedAt=utcnow(),
        pendingCount=0,
        runningCount=service.desired_count,
        rolloutState="COMPLETED",
        rolloutStateReason=f"ECS deployment {deployment['id']} completed.",
    )
    if replace:
        service.deployments = [deployment]
    _run_tasks(backend, service, deployment)


def _fail(service: Service, rollout: _Rollout, new: dict[str, Any]) -> None:
    """The record's ending was decided: the new deployment failed; maybe a rollback starts."""
    record = rollout.record
    ending = record.ending
    assert ending is not None
    new.update(
        updatedAt=utcnow(),
        pendingCount=0,
        runningCount=0,
        failedTasks=record.threshold if ending.cause == "breaker" else 0,
        rolloutState="FAILED",
        rolloutStateReason=record.reason,
    )
    if ending.action != "rollback" or record.rollback_to is None:
        # ECS leaves a failed deployment PRIMARY when it does not (or cannot) roll back; the
        # tasks of the deployment before it go on running beside it.
        return
    new["status"] = "ACTIVE"
    previous = record.rollback_to.task_definition
    rollback = _new_deployment(service, previous, status="PRIMARY", state="IN_PROGRESS", running=0)
    service.deployments = [rollback, new]
    service.task_definition = previous
    rollout.rollback_deployment_id = rollback["id"]


# --- tasks, for clients that judge a rollout from ListTasks/DescribeTasks (ecs-deploy) ---


class _ServiceTask(Task):
    """A task a service keeps RUNNING until the sandbox replaces it.

    moto's tasks walk towards STOPPED one step per DescribeTasks (as its state manager is
    configured), which would make a healthy service look like it is losing its tasks to anyone
    who polls them. This status ignores the state manager; only the sandbox sets it.
    """

    @property
    def status(self) -> str | None:
        return self._status

    @status.setter
    def status(self, value: str) -> None:
        self._status = value


def _container(
    base: Container, task_definition: TaskDefinition, definition: dict[str, Any]
) -> Container:
    # moto models only the first container of a task; ECS reports every one of them.
    container = copy.copy(base)
    container.container_arn = f"{task_definition.arn}/{uuid.uuid4()}"
    container.name = definition.get("name")
    container.image = definition.get("image")
    container.cpu = definition.get("cpu", 0)
    container.memory = definition.get("memory")
    container.environment = definition.get("environment")
    container.command = definition.get("command")
    container.last_status = "RUNNING"
    return container


def _run_tasks(
    backend: EC2ContainerServiceBackend, service: Service, deployment: dict[str, Any]
) -> None:
    """Make the service's RUNNING tasks exactly desiredCount tasks started by this deployment.

    Tasks of earlier deployments stop, the same task definition or not: a forced deployment
    or a rollback replaces tasks, as in ECS.
    """
    group = f"service:{service.name}"
    task_definition = backend.describe_task_definition(deployment["taskDefinition"])
    tasks = backend.tasks.setdefault(service.cluster_name, {})
    keep: list[Task] = []
    for task in tasks.values():
        if task.group != group or task.desired_status != "RUNNING":
            continue
        if task.started_by == deployment["id"] and len(keep) < service.desired_count:
            keep.append(task)
            continue
        task.last_status = "STOPPED"
        task.desired_status = "STOPPED"
        task.stopped_reason = f"Scaling activity initiated by (deployment {deployment['id']})"
    cluster = backend._get_cluster(service.cluster_name)
    for _ in range(service.desired_count - len(keep)):
        try:
            task = _ServiceTask(
                cluster=cluster,
                task_definition=task_definition,
                container_instance_arn=None,
                resource_requirements=None,
                backend=backend,
                group=group,
                launch_type=service.launch_type or "",
                started_by=deployment["id"],
                networking_configuration=service.network_configuration or None,
                platform_version=service.platform_version,
            )
        except InvalidParameterException:
            return  # awsvpc without a networkConfiguration: the service runs no visible tasks
        base = task.containers[0]
        definitions = task_definition.container_definitions
        task.containers = [_container(base, task_definition, d) for d in definitions]
        tasks[task.task_arn] = task


# --- counts ---


def _recount(backend: EC2ContainerServiceBackend, service: Service) -> None:
    """Service counts are the sums over its deployments; the cluster's follow the change."""
    running = sum(int(d["runningCount"]) for d in _deployments(service))
    pending = sum(int(d["pendingCount"]) for d in _deployments(service))
    cluster = backend._get_cluster(service.cluster_name)
    backend.update_cluster_resources(cluster, running - service.running_count, task_state="RUNNING")
    backend.update_cluster_resources(cluster, pending - service.pending_count, task_state="PENDING")
    service.running_count = running
    service.pending_count = pending


def _rescale(backend: EC2ContainerServiceBackend, service: Service) -> None:
    """A desiredCount change without a new deployment scales the PRIMARY one in place."""
    for deployment in _deployments(service):
        if deployment["status"] != "PRIMARY" or deployment["desiredCount"] == service.desired_count:
            continue
        deployment["desiredCount"] = service.desired_count
        if deployment["rolloutState"] == "IN_PROGRESS":
            deployment["pendingCount"] = service.desired_count
        else:
            deployment["runningCount"] = service.desired_count
            _run_tasks(backend, service, deployment)


# --- the wrapped backend methods ---


def _progress_cluster(
    controller: RolloutController, backend: EC2ContainerServiceBackend, cluster_name: str
) -> None:
    for service in list(backend.services.values()):
        if service.cluster_name == cluster_name:
            _progress(controller, backend, service)
            _recount(backend, service)


@_PATCHES.around(EC2ContainerServiceBackend, "create_service")
def _create_service(
    controller: RolloutController,
    original: Callable[..., Service],
    backend: EC2ContainerServiceBackend,
    *args: Any,
    **kwargs: Any,
) -> Service:
    service = original(backend, *args, **kwargs)
    setattr(service, "sandbox_state", _ServiceState())  # noqa: B010
    configuration = _CREATING.get()
    if configuration is not None:
        setattr(service, "deployment_configuration", configuration)  # noqa: B010
    deployments.record_creation(backend, service, controller.clock())
    if _deployments(service):  # moto starts it IN_PROGRESS with no tasks; ECS would settle
        deployment = _deployments(service)[0]
        deployment.update(
            runningCount=service.desired_count,
            pendingCount=0,
            rolloutState="COMPLETED",
            rolloutStateReason=f"ECS deployment {deployment['id']} completed.",
        )
        if service.task_definition:
            _run_tasks(backend, service, deployment)
    _recount(backend, service)
    return service


@_PATCHES.around(EC2ContainerServiceBackend, "update_service")
def _update_service(
    controller: RolloutController,
    original: Callable[..., Service],
    backend: EC2ContainerServiceBackend,
    service_properties: dict[str, Any],
) -> Service:
    cluster = backend._get_cluster(service_properties.get("cluster") or "default")
    name = str(service_properties.get("service", "")).split("/")[-1]
    service = backend._get_service(cluster.name, name)
    _progress(controller, backend, service)
    previous = service.task_definition
    requested = service_properties.get("task_definition")
    target = backend.describe_task_definition(requested).arn if requested else previous
    force = bool(service_properties.get("force_new_deployment"))
    configuration = getattr(service, "deployment_configuration", None)
    requested_configuration = service_properties.get("deployment_configuration")
    # moto's forceNewDeployment renames the existing deployment in place; a new one is made below.
    service_properties["force_new_deployment"] = False
    counts = (service.running_count, service.pending_count)
    cluster_counts = (cluster.running_tasks_count, cluster.pending_tasks_count)
    result = original(backend, service_properties)
    # moto rewrites the counts from desiredCount at once; _recount derives them from deployments.
    service.running_count, service.pending_count = counts
    cluster.running_tasks_count, cluster.pending_tasks_count = cluster_counts
    service.task_definition = target  # moto stores whatever string it was given, family:rev too
    if requested_configuration is not None and configuration:
        # moto replaces the whole configuration; ECS changes only the fields the call names.
        merged = {**configuration, **requested_configuration}
        setattr(service, "deployment_configuration", merged)  # noqa: B010
    if target != previous or force:
        _start_rollout(controller, backend, service, target, previous=previous)
        if target != previous:
            controller._count_update(cluster.name, service.name)
    else:
        _rescale(backend, service)
    _recount(backend, service)
    return result


@_PATCHES.around(EC2ContainerServiceBackend, "describe_services")
def _describe_services(
    controller: RolloutController,
    original: Callable[..., tuple[list[Service], list[dict[str, str]]]],
    backend: EC2ContainerServiceBackend,
    *args: Any,
    **kwargs: Any,
) -> tuple[list[Service], list[dict[str, str]]]:
    services, failures = original(backend, *args, **kwargs)
    for service in services:
        _progress(controller, backend, service)
        _recount(backend, service)
    return services, failures


@_PATCHES.around(EC2ContainerServiceBackend, "list_tasks")
def _list_tasks(
    controller: RolloutController,
    original: Callable[..., list[Task]],
    backend: EC2ContainerServiceBackend,
    *args: Any,
    **kwargs: Any,
) -> list[Task]:
    call = bound(original, backend, *args, **kwargs)
    arguments = call.arguments
    if arguments["cluster_str"]:
        _progress_cluster(controller, backend, backend._get_cluster(arguments["cluster_str"]).name)
    service_name = arguments["service_name"]
    arguments["service_name"] = None
    # ECS lists RUNNING tasks unless asked otherwise; moto lists every task it ever ran.
    arguments["desiredStatus"] = arguments["desiredStatus"] or "RUNNING"
    tasks = original(*call.args, **call.kwargs)
    if service_name:  # moto ignores serviceName; the tasks of a service carry its group
        group = f"service:{service_name.split('/')[-1]}"
        tasks = [task for task in tasks if task.group == group]
    return tasks


@_PATCHES.around(EC2ContainerServiceBackend, "describe_tasks")
def _describe_tasks(
    controller: RolloutController,
    original: Callable[..., list[Task]],
    backend: EC2ContainerServiceBackend,
    cluster_str: str,
    tasks: list[str],
) -> list[Task]:
    _progress_cluster(controller, backend, backend._get_cluster(cluster_str).name)
    return original(backend, cluster_str, tasks)


@_PATCHES.around(EC2ContainerServiceResponse, "create_service")
def _keep_deployment_configuration(
    controller: RolloutController,
    original: Callable[..., Any],
    response: EC2ContainerServiceResponse,
) -> Any:
    """moto's CreateService drops deploymentConfiguration; ECS stores it (with defaults)."""
    requested = response._get_param("deploymentConfiguration") or {}
    # Handed to the backend's create_service, so the service has it before its first
    # service deployment is recorded.
    token = _CREATING.set({**copy.deepcopy(_DEFAULT_DEPLOYMENT_CONFIGURATION), **requested})
    try:
        return original(response)
    finally:
        _CREATING.reset(token)


# The service deployment calls moto lacks, answered for the controller serving the request.
for _action, _handler in deployments.HANDLERS.items():
    _PATCHES.adds(EC2ContainerServiceResponse, _action)(_handler)
