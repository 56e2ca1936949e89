"""ECS through aioboto3: batched DescribeServices, DescribeTasks and
DescribeServiceDeployments, cached task definitions and service revisions, the writes, and
one-off tasks.

ECS throttles per account and region, shared with every other tool, so reads are pooled:
all apps asking about services of one cluster within a few milliseconds share
DescribeServices calls of up to 10 services each, tasks are described the same way up to 100
per call, service deployments up to 20 per call (from any cluster: the call takes ARNs only),
and a task definition or a service revision is fetched once per ARN for the daemon's life
(neither ever changes).
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aioboto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from reconciler.adapters.aws import aws_errors
from reconciler.adapters.values import TaskRunRequest
from reconciler.aio.batching import Batcher
from reconciler.decisions.model import (
    Deployment,
    RolloutSettings,
    ServiceDeployment,
    ServiceState,
    TaskLaunch,
    TaskState,
)
from reconciler.errors import AwsRejected

DESCRIBE_BATCH = 10  # DescribeServices accepts at most 10 services per call
DESCRIBE_TASKS_BATCH = 100  # DescribeTasks accepts at most 100 tasks per call
# DescribeServiceDeployments and DescribeServiceRevisions accept at most 20 ARNs per call.
DESCRIBE_DEPLOYMENTS_BATCH = 20
# Answers that say "this region, account or service keeps no service deployments", as
# opposed to "you may not read them" (AccessDenied, which the caller is told about).
UNSUPPORTED_CODES = frozenset(
    {"UnsupportedFeatureException", "UnknownOperationException", "InvalidAction"}
)
STOP_REASON_LIMIT = 255  # StopTask keeps at most this many characters of the reason
TaskDefinition = dict[str, Any]


def boto_config() -> BotoConfig:
    # One quick retry inside botocore; anything longer is the app loop's backoff, which
    # knows about jitter across apps and never blocks other apps.
    return BotoConfig(
        retries={"mode": "standard", "max_attempts": 2},
        connect_timeout=5,
        read_timeout=20,
        max_pool_connections=50,
    )


def _deployment(raw: Mapping[str, Any]) -> Deployment:
    return Deployment(
        id=str(raw.get("id", "")),
        status=str(raw.get("status", "")),
        task_definition=str(raw.get("taskDefinition", "")),
        rollout_state=raw.get("rolloutState"),
        running_count=int(raw.get("runningCount", 0)),
        desired_count=int(raw.get("desiredCount", 0)),
        reason=str(raw.get("rolloutStateReason", "")),
    )


def task_launch(raw: Mapping[str, Any]) -> TaskLaunch:
    """How a service (a DescribeServices or UpdateService `service`) launches its tasks."""
    # Empty values count as absent: a service without awsvpc may answer `{}` for its network.
    network = raw.get("networkConfiguration") or None
    return TaskLaunch(
        launch_type=raw.get("launchType") or None,
        capacity_provider_strategy=tuple(
            copy.deepcopy(dict(s)) for s in raw.get("capacityProviderStrategy") or ()
        ),
        network_configuration=copy.deepcopy(dict(network)) if network else None,
        platform_version=raw.get("platformVersion") or None,
    )


def launch_request(launch: TaskLaunch) -> dict[str, Any]:
    """The RunTask parameters that launch a task as `launch` says."""
    request: dict[str, Any] = {}
    # RunTask refuses a launch type together with a capacity provider strategy.
    if launch.launch_type:
        request["launchType"] = launch.launch_type
    elif launch.capacity_provider_strategy:
        request["capacityProviderStrategy"] = [
            copy.deepcopy(dict(s)) for s in launch.capacity_provider_strategy
        ]
    if launch.network_configuration:
        request["networkConfiguration"] = copy.deepcopy(dict(launch.network_configuration))
    if launch.platform_version:
        request["platformVersion"] = launch.platform_version
    return request


def rollout_settings(raw: Mapping[str, Any]) -> RolloutSettings:
    """Who rolls a service (a DescribeServices `service`) out, how, and how long it bakes.

    The bake counts every wait ECS adds once the new tasks are up: bakeTimeInMinutes, plus
    each LINEAR step's bake (one per stepPercent of traffic), plus the CANARY's bake.
    """
    controller = str((raw.get("deploymentController") or {}).get("type") or "ECS")
    config = raw.get("deploymentConfiguration") or {}
    strategy = str(config.get("strategy") or "ROLLING")
    bake = 60.0 * float(config.get("bakeTimeInMinutes") or 0)
    if strategy == "LINEAR":
        linear = config.get("linearConfiguration") or {}
        step = float(linear.get("stepPercent") or 0)
        if step > 0:
            bake += 60.0 * float(linear.get("stepBakeTimeInMinutes") or 0) * math.ceil(100 / step)
    elif strategy == "CANARY":
        canary = config.get("canaryConfiguration") or {}
        bake += 60.0 * float(canary.get("canaryBakeTimeInMinutes") or 0)
    return RolloutSettings(controller=controller, strategy=strategy, bake_seconds=bake)


def service_state(cluster: str, raw: Mapping[str, Any]) -> ServiceState:
    # Newer ECS answers name the service deployment in flight; this botocore's model may not
    # know the field, so it is read where present and never required.
    current = raw.get("currentServiceDeployment")
    return ServiceState(
        cluster=cluster,
        service=str(raw.get("serviceName", "")),
        task_definition=str(raw.get("taskDefinition", "")),
        deployments=tuple(_deployment(d) for d in raw.get("deployments", [])),
        status=str(raw.get("status", "")),
        launch=task_launch(raw),
        rollout=rollout_settings(raw),
        current_service_deployment=str(current) if current else None,
    )


def service_deployment(raw: Mapping[str, Any]) -> ServiceDeployment:
    """One DescribeServiceDeployments `serviceDeployments` entry."""
    breaker = raw.get("deploymentCircuitBreaker") or {}
    alarms = raw.get("alarms") or {}
    rollback = raw.get("rollback") or {}
    return ServiceDeployment(
        arn=str(raw.get("serviceDeploymentArn", "")),
        status=str(raw.get("status", "")),
        lifecycle_stage=str(raw.get("lifecycleStage") or ""),
        target_revision=str((raw.get("targetServiceRevision") or {}).get("arn") or ""),
        status_reason=str(raw.get("statusReason") or ""),
        created_at=_when(raw.get("createdAt")),
        started_at=_when(raw.get("startedAt")),
        # A stopped deployment has stoppedAt; ECS may leave finishedAt unset for it.
        finished_at=_when(raw.get("finishedAt") or raw.get("stoppedAt")),
        failed_tasks=int(breaker.get("failureCount") or 0),
        alarms_triggered=tuple(str(n) for n in alarms.get("triggeredAlarmNames") or ()),
        rollback_reason=str(rollback.get("reason") or ""),
    )


def _when(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _unsupported(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in UNSUPPORTED_CODES


def task_state(raw: Mapping[str, Any]) -> TaskState:
    """One DescribeTasks `task`."""
    exit_codes: dict[str, int | None] = {}
    reasons: dict[str, str] = {}
    for container in raw.get("containers") or []:
        name = str(container.get("name", ""))
        code = container.get("exitCode")
        exit_codes[name] = None if code is None else int(code)
        if container.get("reason"):
            reasons[name] = str(container["reason"])
    return TaskState(
        arn=str(raw.get("taskArn", "")),
        last_status=str(raw.get("lastStatus", "")),
        stop_code=str(raw.get("stopCode") or ""),
        stopped_reason=str(raw.get("stoppedReason") or ""),
        exit_codes=exit_codes,
        container_reasons=reasons,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _failures(answer: Mapping[str, Any]) -> str:
    """The `failures` of an answer in one line: reason (detail), for each."""
    parts = []
    for failure in answer.get("failures") or []:
        reason = _one_line(str(failure.get("reason") or "unknown reason"))
        detail = _one_line(str(failure.get("detail") or ""))
        parts.append(f"{reason} ({detail})" if detail else reason)
    return "; ".join(parts)


class Ecs:
    """The daemon's one ECS client."""

    def __init__(self, client: Any, *, batch_window: float = 0.005) -> None:
        self._client = client
        # Every service asked about, per cluster (insertion-ordered), and its latest answer.
        self._known: dict[str, dict[str, None]] = {}
        self._answers: dict[tuple[str, str], tuple[float, ServiceState]] = {}
        # Per cluster, services by name (or ARN) and tasks by ARN (or id).
        self._services = Batcher[str, str, ServiceState](
            self._describe_services,
            limit=DESCRIBE_BATCH,
            window=batch_window,
            name="ecs-describe",
            fill=self._stalest_services,
        )
        self._tasks = Batcher[str, str, TaskState](
            self._describe_tasks,
            limit=DESCRIBE_TASKS_BATCH,
            window=batch_window,
            name="ecs-describe-tasks",
        )
        # Service deployments by ARN, from any cluster: answered with the record, or with
        # why ECS has none (each caller names its own cluster in the error).
        self._deployments = Batcher[None, str, ServiceDeployment | str](
            self._describe_deployments,
            limit=DESCRIBE_DEPLOYMENTS_BATCH,
            window=batch_window,
            name="ecs-describe-service-deployments",
        )
        self._task_definitions: dict[str, asyncio.Future[tuple[TaskDefinition, list[Any]]]] = {}
        # Service revision ARN -> its task definition (a revision never changes).
        self._revisions: dict[str, str] = {}
        self._register_fields: frozenset[str] = frozenset(
            client.meta.service_model.operation_model("RegisterTaskDefinition").input_shape.members
        )

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, *, region: str, endpoint_url: str = "", session: aioboto3.Session | None = None
    ) -> AsyncIterator[Ecs]:
        """A client for `region`; with `session`, that session's credentials (an assumed
        role's)."""
        session = session or aioboto3.Session()
        async with session.client(
            "ecs", region_name=region, endpoint_url=endpoint_url or None, config=boto_config()
        ) as client:
            ecs = cls(client)
            try:
                yield ecs
            finally:
                await ecs._stop_batches()

    async def _stop_batches(self) -> None:
        """Drop the batched calls still to be sent, before the client closes: their callers
        are gone (they stop first), and a call sent after the close would open a connection
        pool that nobody closes."""
        await self._services.close()
        await self._tasks.close()
        await self._deployments.close()

    # Reads ----------------------------------------------------------------------------

    async def describe_service(
        self, cluster: str, service: str, *, max_age: float = 0.0
    ) -> ServiceState:
        """One service's state; concurrent callers share batched DescribeServices calls.

        With `max_age`, an answer at most that many seconds old is returned without a call.
        """
        self._known.setdefault(cluster, {})[service] = None
        if max_age > 0:
            answered = self._answers.get((cluster, service))
            if answered is not None and time.monotonic() - answered[0] <= max_age:
                return answered[1]
        # Asked with `max_age`, an answer already on its way is recent enough to wait for.
        return await self._services.get(cluster, service, join=max_age > 0)

    def _stalest_services(self, cluster: str) -> list[str]:
        """The cluster's services asked about before, the oldest answers first: the free
        places of a DescribeServices call carry them, at no cost, so their next observe
        needs no call."""
        known = self._known.get(cluster, {})
        return sorted(known, key=lambda s: self._answers.get((cluster, s), (0.0,))[0])

    async def _describe_services(
        self, cluster: str, names: list[str]
    ) -> dict[str, ServiceState | BaseException]:
        async with aws_errors():
            answer = await self._client.describe_services(cluster=cluster, services=names)
        found: dict[str, ServiceState] = {}
        now = time.monotonic()
        # Parsed within the batch's request: an answer that does not parse fails the
        # callers, never leaves them awaiting futures nobody will resolve.
        for raw in answer.get("services", []):
            state = service_state(cluster, raw)
            found[state.service] = state
            found[str(raw.get("serviceArn", ""))] = state
            self._answers[(cluster, state.service)] = (now, state)
        answers: dict[str, ServiceState | BaseException] = {}
        for name in names:
            state_or_none = found.get(name)
            if state_or_none is None or state_or_none.status not in {"ACTIVE", "DRAINING"}:
                answers[name] = AwsRejected(f"service {name!r} not found in cluster {cluster!r}")
            else:
                answers[name] = state_or_none
        return answers

    async def task_definition(self, arn: str) -> tuple[TaskDefinition, list[Any]]:
        """The task definition and its tags, fetched once per ARN (ARNs are immutable)."""
        cached = self._task_definitions.get(arn)
        if cached is None:
            cached = asyncio.get_running_loop().create_future()
            self._task_definitions[arn] = cached
            try:
                async with aws_errors():
                    answer = await self._client.describe_task_definition(
                        taskDefinition=arn, include=["TAGS"]
                    )
                cached.set_result((answer["taskDefinition"], list(answer.get("tags") or [])))
            except BaseException as exc:
                # Not cached: a failure is retried on the next pass.
                del self._task_definitions[arn]
                cached.set_exception(exc)
                cached.exception()  # mark retrieved: the raise below reports it
                raise
        definition, tags = await asyncio.shield(cached)
        return copy.deepcopy(definition), copy.deepcopy(tags)

    # Service deployments ----------------------------------------------------------------

    async def find_service_deployment(
        self, *, cluster: str, service: str, task_definition: str, created_after: datetime
    ) -> ServiceDeployment | None:
        """The service's newest service deployment created after `created_after` whose target
        revision runs `task_definition`; None when there is none, or where the region or the
        service keeps no service deployments. Raises AwsRejected when the calls are refused
        (AccessDenied), so the caller can judge by the `deployments` list instead."""
        request: dict[str, Any] = {
            "cluster": cluster,
            "service": service,
            "createdAt": {"after": created_after},
        }
        while True:
            async with aws_errors():
                try:
                    answer = await self._client.list_service_deployments(**request)
                except ClientError as exc:
                    if _unsupported(exc):
                        return None
                    raise
            # ECS answers newest first; sorted again so a differing order cannot pick an
            # older deployment of the same task definition.
            briefs = sorted(
                answer.get("serviceDeployments") or [],
                key=lambda b: _when(b.get("createdAt")) or created_after,
                reverse=True,
            )
            revisions = [str(b.get("targetServiceRevisionArn") or "") for b in briefs]
            for i, (brief, revision) in enumerate(zip(briefs, revisions, strict=True)):
                if revision and revision not in self._revisions:
                    # This candidate and the next unknown ones, in one call.
                    await self._learn_revisions(revisions[i:])
                if self._revisions.get(revision) == task_definition:
                    arn = str(brief["serviceDeploymentArn"])
                    return await self.describe_service_deployment(cluster=cluster, arn=arn)
            token = answer.get("nextToken")
            if not token:
                return None
            request["nextToken"] = token

    async def _learn_revisions(self, arns: Sequence[str]) -> None:
        """Fetch the task definitions of the first 20 of these revisions not known yet."""
        unknown = list(dict.fromkeys(a for a in arns if a and a not in self._revisions))
        chunk = unknown[:DESCRIBE_DEPLOYMENTS_BATCH]
        async with aws_errors():
            answer = await self._client.describe_service_revisions(serviceRevisionArns=chunk)
        for raw in answer.get("serviceRevisions") or []:
            arn, definition = raw.get("serviceRevisionArn"), raw.get("taskDefinition")
            if arn and definition:
                self._revisions[str(arn)] = str(definition)

    async def describe_service_deployment(self, *, cluster: str, arn: str) -> ServiceDeployment:
        """One service deployment's record; concurrent callers share batched
        DescribeServiceDeployments calls of up to 20 ARNs (whatever their clusters)."""
        record = await self._deployments.get(None, arn)
        if isinstance(record, str):
            raise AwsRejected(
                f"service deployment {arn} not found in cluster {cluster!r}: {record}"
            )
        return record

    async def _describe_deployments(
        self, _: None, arns: list[str]
    ) -> dict[str, ServiceDeployment | str | BaseException]:
        async with aws_errors():
            answer = await self._client.describe_service_deployments(serviceDeploymentArns=arns)
        found: dict[str, ServiceDeployment] = {}
        for raw in answer.get("serviceDeployments") or []:
            record = service_deployment(raw)
            found[record.arn] = record
        missing = {
            str(failure.get("arn") or ""): _failures({"failures": [failure]})
            for failure in answer.get("failures") or []
        }
        return {arn: found.get(arn) or missing.get(arn) or "MISSING" for arn in arns}

    # Writes ---------------------------------------------------------------------------

    async def register_task_definition(self, definition: TaskDefinition, tags: list[Any]) -> str:
        """Register a copy; every field the API accepts is carried over, read-only ones dropped."""
        request = {k: v for k, v in definition.items() if k in self._register_fields}
        if tags:
            request["tags"] = tags
        async with aws_errors():
            answer = await self._client.register_task_definition(**request)
        registered = answer["taskDefinition"]
        arn = str(registered["taskDefinitionArn"])
        done: asyncio.Future[tuple[TaskDefinition, list[Any]]] = (
            asyncio.get_running_loop().create_future()
        )
        done.set_result((registered, list(answer.get("tags") or tags)))
        self._task_definitions[arn] = done
        return arn

    async def update_service(self, *, cluster: str, service: str, task_definition: str) -> str:
        """Point the service at `task_definition`; returns the id of the deployment it started."""
        async with aws_errors():
            answer = await self._client.update_service(
                cluster=cluster, service=service, taskDefinition=task_definition
            )
        state = service_state(cluster, answer["service"])
        self._answers[(cluster, service)] = (time.monotonic(), state)
        primary = state.primary
        if primary is None or primary.task_definition != task_definition:
            raise AwsRejected(
                f"UpdateService of {service!r} did not start a deployment of {task_definition}"
            )
        return primary.id

    # One-off tasks --------------------------------------------------------------------

    async def run_task(self, request: TaskRunRequest) -> str:
        """Start the one task `request` describes; its ARN.

        Raises AwsRejected when ECS answers with failures instead of a task (no capacity, no
        container instance, ...): the same request will not start one without a change.
        """
        call: dict[str, Any] = {
            "cluster": request.cluster,
            "taskDefinition": request.task_definition,
            "count": 1,
            "startedBy": request.started_by,
            "overrides": {
                "containerOverrides": [
                    {"name": request.container, "command": list(request.command)}
                ]
            },
            **launch_request(request.launch),
        }
        async with aws_errors():
            answer = await self._client.run_task(**call)
        tasks = answer.get("tasks") or []
        if tasks:
            return str(tasks[0]["taskArn"])
        why = _failures(answer) or "ECS named no reason"
        raise AwsRejected(
            f"RunTask of {request.task_definition} in cluster {request.cluster!r} started no"
            f" task: {why}"
        )

    async def describe_task(self, *, cluster: str, task: str) -> TaskState:
        """The task's state; concurrent callers share batched DescribeTasks calls."""
        return await self._tasks.get(cluster, task)

    async def _describe_tasks(
        self, cluster: str, arns: list[str]
    ) -> dict[str, TaskState | BaseException]:
        async with aws_errors():
            answer = await self._client.describe_tasks(cluster=cluster, tasks=arns)
        found: dict[str, TaskState] = {}
        missing: dict[str, str] = {}
        for raw in answer.get("tasks") or []:
            state = task_state(raw)
            # Asked by ARN or by id: answered under both.
            found[state.arn] = found[state.arn.rpartition("/")[2]] = state
        for failure in answer.get("failures") or []:
            arn = str(failure.get("arn") or "")
            missing[arn] = missing[arn.rpartition("/")[2]] = _failures({"failures": [failure]})
        answers: dict[str, TaskState | BaseException] = {}
        for arn in arns:
            state_or_none = found.get(arn) or found.get(arn.rpartition("/")[2])
            if state_or_none is None:
                why = missing.get(arn) or missing.get(arn.rpartition("/")[2]) or "MISSING"
                answers[arn] = AwsRejected(f"task {arn} not found in cluster {cluster!r}: {why}")
            else:
                answers[arn] = state_or_none
        return answers

    async def stop_task(self, *, cluster: str, task: str, reason: str) -> None:
        """Ask ECS to stop the task; it is STOPPED once DescribeTasks says so."""
        request = {"cluster": cluster, "task": task}
        if reason.strip():
            request["reason"] = _one_line(reason)[:STOP_REASON_LIMIT]
        async with aws_errors():
            await self._client.stop_task(**request)

    async def find_tasks(self, *, cluster: str, started_by: str) -> list[str]:
        """ARNs of the cluster's tasks started by `started_by` that have not stopped.

        desiredStatus RUNNING lists the tasks that are provisioning, pending or running. A
        task that StopTask was called for drops out at once, while it may still be stopping.
        """
        arns: list[str] = []
        request: dict[str, Any] = {
            "cluster": cluster,
            "startedBy": started_by,
            "desiredStatus": "RUNNING",
        }
        async with aws_errors():
            while True:
                answer = await self._client.list_tasks(**request)
                arns.extend(str(arn) for arn in answer.get("taskArns") or [])
                token = answer.get("nextToken")
                if not token:
                    return arns
                request["nextToken"] = token
