"""AWS writes that belong to an app go out only while its lease is valid.

The wrappers stand in for the app's EcsPort and HousekeepingPort: reads pass through, and
each write (RegisterTaskDefinition, UpdateService, RunTask, StopTask, deregistering and
deleting) first asks the lease. ECS cannot check a fencing token itself, so this check,
made right before the request, is the fence: a daemon paused past its lease and resumed
finds it expired on its monotonic clock and sends nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from reconciler.adapters.ports import Adapters, EcsPort, HousekeepingPort
from reconciler.adapters.values import TaskRunRequest
from reconciler.decisions.housekeeping import Deleted, StoredImage, TaskDefinitionRevision
from reconciler.decisions.model import ServiceDeployment, ServiceState, Started, TaskState
from reconciler.errors import LeaseNotHeld

TaskDefinition = dict[str, Any]


class Fence:
    """Raises LeaseNotHeld unless the app's lease may be acted on now."""

    def __init__(
        self, app: str, *, valid: Callable[[str], bool], why_not: Callable[[str], str]
    ) -> None:
        self.app = app
        self._valid = valid
        self._why_not = why_not

    def check(self, action: str) -> None:
        if not self._valid(self.app):
            raise LeaseNotHeld(f"not sending {action}: {self._why_not(self.app)}")


class FencedEcs:
    def __init__(self, inner: EcsPort, fence: Fence) -> None:
        self._inner = inner
        self._fence = fence

    async def describe_service(
        self, cluster: str, service: str, *, max_age: float = 0.0
    ) -> ServiceState:
        return await self._inner.describe_service(cluster, service, max_age=max_age)

    async def task_definition(self, arn: str) -> tuple[TaskDefinition, list[Any]]:
        return await self._inner.task_definition(arn)

    async def register_task_definition(self, definition: TaskDefinition, tags: list[Any]) -> str:
        self._fence.check("RegisterTaskDefinition")
        return await self._inner.register_task_definition(definition, tags)

    async def update_service(self, *, cluster: str, service: str, task_definition: str) -> Started:
        self._fence.check("UpdateService")
        return await self._inner.update_service(
            cluster=cluster, service=service, task_definition=task_definition
        )

    async def run_task(self, request: TaskRunRequest) -> str:
        self._fence.check("RunTask")
        return await self._inner.run_task(request)

    async def describe_task(self, *, cluster: str, task: str) -> TaskState:
        return await self._inner.describe_task(cluster=cluster, task=task)

    async def stop_task(self, *, cluster: str, task: str, reason: str) -> None:
        self._fence.check("StopTask")
        await self._inner.stop_task(cluster=cluster, task=task, reason=reason)

    async def find_tasks(self, *, cluster: str, started_by: str) -> list[str]:
        return await self._inner.find_tasks(cluster=cluster, started_by=started_by)

    async def find_service_deployment(
        self, *, cluster: str, service: str, task_definition: str, created_after: datetime
    ) -> ServiceDeployment | None:
        return await self._inner.find_service_deployment(
            cluster=cluster,
            service=service,
            task_definition=task_definition,
            created_after=created_after,
        )

    async def describe_service_deployment(self, *, cluster: str, arn: str) -> ServiceDeployment:
        return await self._inner.describe_service_deployment(cluster=cluster, arn=arn)


class FencedHousekeeping:
    def __init__(self, inner: HousekeepingPort, fence: Fence) -> None:
        self._inner = inner
        self._fence = fence

    async def service(self, *, cluster: str, service: str) -> ServiceState:
        return await self._inner.service(cluster=cluster, service=service)

    async def in_flight_task_definitions(self, *, cluster: str, service: str) -> dict[str, str]:
        return await self._inner.in_flight_task_definitions(cluster=cluster, service=service)

    async def task_definitions(self, family: str) -> list[TaskDefinitionRevision]:
        return await self._inner.task_definitions(family)

    async def task_definition(self, arn: str) -> TaskDefinitionRevision:
        return await self._inner.task_definition(arn)

    async def images(self, repository: str) -> list[StoredImage]:
        return await self._inner.images(repository)

    async def deregister(self, arn: str) -> None:
        self._fence.check("DeregisterTaskDefinition")
        await self._inner.deregister(arn)

    async def delete_images(self, repository: str, digests: Sequence[str]) -> list[Deleted]:
        self._fence.check("BatchDeleteImage")
        return await self._inner.delete_images(repository, digests)


def fenced(adapters: Adapters, fence: Fence) -> Adapters:
    """`adapters` with the app's ECS and housekeeping writes asking `fence` first."""
    housekeeping = adapters.housekeeping
    return dataclasses.replace(
        adapters,
        ecs=FencedEcs(adapters.ecs, fence),
        housekeeping=None if housekeeping is None else FencedHousekeeping(housekeeping, fence),
    )
