"""ECS through aiobotocore: batched DescribeServices, DescribeTasks and
DescribeServiceDeployments, cached task definitions and service revisions, the writes, and
one-off tasks.

ECS throttles per account and region, shared with every other tool, so reads are pooled:
all apps asking about services of one cluster within a few milliseconds share
DescribeServices calls of up to 10 services each, tasks are described the same way up to 100
per call, service deployments up to 20 per call (from any cluster: the call takes ARNs only),
and a task definition or a service revision is fetched once per ARN for the daemon's life
(neither ever changes). Service deployments are ecs_deployments.py's; what ECS's answers mean
as the project's values is ecs_answers.py's.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from reconciler.adapters.aws import aws_errors
from reconciler.adapters.ecs_answers import (
    DESCRIBE_BATCH,
    DESCRIBE_TASKS_BATCH,
    STOP_REASON_LIMIT,
    failures_of,
    launch_request,
    one_line,
    service_state,
    task_state,
)
from reconciler.adapters.ecs_deployments import ServiceDeployments
from reconciler.adapters.values import TaskRunRequest
from reconciler.aio.batching import Batcher
from reconciler.decisions.model import (
    HookAction,
    ServiceDeployment,
    ServiceState,
    Started,
    TaskState,
)
from reconciler.errors import AwsRejected

TaskDefinition = dict[str, Any]


def boto_config() -> AioConfig:
    # One quick retry inside botocore; anything longer is the app loop's backoff, which
    # knows about jitter across apps and never blocks other apps.
    return AioConfig(
        retries={"mode": "standard", "max_attempts": 2},
        connect_timeout=5,
        read_timeout=20,
        max_pool_connections=50,
    )


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
        self._service_deployments = ServiceDeployments(client, batch_window=batch_window)
        self._task_definitions: dict[str, asyncio.Future[tuple[TaskDefinition, list[Any]]]] = {}
        self._register_fields: frozenset[str] = frozenset(
            client.meta.service_model.operation_model("RegisterTaskDefinition").input_shape.members
        )

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, *, region: str, endpoint_url: str = "", session: AioSession | None = None
    ) -> AsyncIterator[Ecs]:
        """A client for `region`; with `session`, that session's credentials (an assumed
        role's)."""
        session = session or AioSession()
        async with session.create_client(
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
        await self._service_deployments.close()

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
        self,
        *,
        cluster: str,
        service: str,
        task_definition: str,
        created_after: datetime | None = None,
    ) -> ServiceDeployment | None:
        """See ServiceDeployments.find (ecs_deployments.py)."""
        return await self._service_deployments.find(
            cluster=cluster,
            service=service,
            task_definition=task_definition,
            created_after=created_after,
        )

    async def describe_service_deployment(self, *, cluster: str, arn: str) -> ServiceDeployment:
        return await self._service_deployments.describe(cluster=cluster, arn=arn)

    # Writes ---------------------------------------------------------------------------

    async def continue_service_deployment(self, *, arn: str, hook: str, action: HookAction) -> None:
        async with aws_errors():
            await self._client.continue_service_deployment(
                serviceDeploymentArn=arn, hookId=hook, action=action
            )

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

    async def update_service(
        self,
        *,
        cluster: str,
        service: str,
        task_definition: str,
        settings: Mapping[str, Any] | None = None,
    ) -> Started:
        """Point the service at `task_definition`; the deployment it started and, where the
        answer names it, that deployment's service deployment record (so the watch needs no
        ListServiceDeployments to find it)."""
        async with aws_errors():
            answer = await self._client.update_service(
                **(settings or {}), cluster=cluster, service=service, taskDefinition=task_definition
            )
        state = service_state(cluster, answer["service"])
        self._answers[(cluster, service)] = (time.monotonic(), state)
        primary = state.primary
        if primary is None or primary.task_definition != task_definition:
            raise AwsRejected(
                f"UpdateService of {service!r} did not start a deployment of {task_definition}"
            )
        return Started(primary.id, state.current_service_deployment)

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
        if request.client_token:
            call["clientToken"] = request.client_token
        async with aws_errors():
            answer = await self._client.run_task(**call)
        tasks = answer.get("tasks") or []
        if tasks:
            return str(tasks[0]["taskArn"])
        why = failures_of(answer) or "ECS named no reason"
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
            missing[arn] = missing[arn.rpartition("/")[2]] = failures_of({"failures": [failure]})
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
            request["reason"] = one_line(reason)[:STOP_REASON_LIMIT]
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
