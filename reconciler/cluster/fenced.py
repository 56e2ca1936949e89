"""AWS and registry writes that belong to an app go out only while its lease is valid, and are
cut off when it stops being valid.

The wrappers stand in for the app's EcsPort, HousekeepingPort, RegistryPort, SchedulesPort
and the push of its DockerPort: reads pass through, and each write (RegisterTaskDefinition,
UpdateService, RunTask, StopTask, PutTargets, UpdateSchedule, deregistering and deleting,
pushes, tag moves and copies) first asks the lease and then runs inside a scope that ends
the moment the lease does (lease.py: TTL minus a margin after its last renewal, on this
daemon's monotonic clock). ECS and the registry cannot check a fencing token themselves, so
this is the fence: a daemon paused past its lease and resumed sends nothing, and a write
that hangs (a slow answer, botocore retrying after a read timeout, a credential refresh
inside the call) is abandoned before any other daemon may count the lease as expired, a
margin later. A long push goes on as long as the lease keeps being renewed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, BinaryIO

from reconciler.adapters.docker import BuildResult
from reconciler.adapters.ports import (
    Adapters,
    DockerPort,
    EcsPort,
    HousekeepingPort,
    RegistryPort,
    SchedulesPort,
)
from reconciler.adapters.registry import RegistryAuth
from reconciler.adapters.values import BuildRequest, ContainerRun, TaskRunRequest
from reconciler.decisions.housekeeping import Deleted, StoredImage, TaskDefinitionRevision
from reconciler.decisions.local_images import LocalImage
from reconciler.decisions.model import (
    HookAction,
    ServiceDeployment,
    ServiceState,
    Started,
    TaskState,
    TestRun,
)
from reconciler.errors import LeaseNotHeld

TaskDefinition = dict[str, Any]
FOLLOW_FLOOR = 0.05  # seconds: the shortest sleep between two looks at the lease


class Fence:
    """Lets an app's write start only while its lease is valid, and cuts it off when the
    lease stops being valid (LeaseNotHeld either way)."""

    def __init__(
        self, app: str, *, left: Callable[[str], float], why_not: Callable[[str], str]
    ) -> None:
        self.app = app
        self._left = left
        self._why_not = why_not

    def check(self, action: str) -> float:
        """The seconds of lease left for `action`; LeaseNotHeld when there are none."""
        left = self._left(self.app)
        if left <= 0:
            raise LeaseNotHeld(f"not sending {action}: {self._why_not(self.app)}")
        return left

    @asynccontextmanager
    async def held(self, action: str) -> AsyncIterator[None]:
        """The body runs while the lease is valid and is cancelled the moment it is not."""
        left = self.check(action)
        loop = asyncio.get_running_loop()
        scope = asyncio.timeout(loop.time() + left)
        try:
            async with scope:
                follower = asyncio.create_task(self._follow(scope), name=f"fence:{self.app}")
                try:
                    yield
                finally:
                    follower.cancel()
        except TimeoutError as exc:
            if not scope.expired():
                raise
            raise LeaseNotHeld(
                f"{action} abandoned: the lease of {self.app!r} ran out while it was under way"
            ) from exc

    async def _follow(self, scope: asyncio.Timeout) -> None:
        """Move the scope's end with each renewal of the lease; leave it once it ran out."""
        loop = asyncio.get_running_loop()
        while True:
            left = self._left(self.app)
            scope.reschedule(loop.time() + left)
            if left <= 0:
                return
            await asyncio.sleep(max(FOLLOW_FLOOR, left * 0.9))


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
        async with self._fence.held("RegisterTaskDefinition"):
            return await self._inner.register_task_definition(definition, tags)

    async def update_service(
        self,
        *,
        cluster: str,
        service: str,
        task_definition: str,
        settings: Mapping[str, Any] | None = None,
    ) -> Started:
        async with self._fence.held("UpdateService"):
            return await self._inner.update_service(
                cluster=cluster, service=service, task_definition=task_definition, settings=settings
            )

    async def run_task(self, request: TaskRunRequest) -> str:
        async with self._fence.held("RunTask"):
            return await self._inner.run_task(request)

    async def describe_task(self, *, cluster: str, task: str) -> TaskState:
        return await self._inner.describe_task(cluster=cluster, task=task)

    async def stop_task(self, *, cluster: str, task: str, reason: str) -> None:
        async with self._fence.held("StopTask"):
            await self._inner.stop_task(cluster=cluster, task=task, reason=reason)

    async def find_tasks(self, *, cluster: str, started_by: str) -> list[str]:
        return await self._inner.find_tasks(cluster=cluster, started_by=started_by)

    async def find_service_deployment(
        self,
        *,
        cluster: str,
        service: str,
        task_definition: str,
        created_after: datetime | None = None,
    ) -> ServiceDeployment | None:
        return await self._inner.find_service_deployment(
            cluster=cluster,
            service=service,
            task_definition=task_definition,
            created_after=created_after,
        )

    async def describe_service_deployment(self, *, cluster: str, arn: str) -> ServiceDeployment:
        return await self._inner.describe_service_deployment(cluster=cluster, arn=arn)

    async def continue_service_deployment(self, *, arn: str, hook: str, action: HookAction) -> None:
        async with self._fence.held("ContinueServiceDeployment"):
            await self._inner.continue_service_deployment(arn=arn, hook=hook, action=action)


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
        async with self._fence.held("DeregisterTaskDefinition"):
            await self._inner.deregister(arn)

    async def delete_images(self, repository: str, digests: Sequence[str]) -> list[Deleted]:
        async with self._fence.held("BatchDeleteImage"):
            return await self._inner.delete_images(repository, digests)


class FencedDocker:
    """Builds, local tags and images, and test runs pass through; a push is a registry
    write."""

    def __init__(self, inner: DockerPort, fence: Fence) -> None:
        self._inner = inner
        self._fence = fence

    async def build(
        self,
        context: BinaryIO,
        request: BuildRequest,
        *,
        on_first_step: Callable[[], None] | None = None,
    ) -> BuildResult:
        return await self._inner.build(context, request, on_first_step=on_first_step)

    async def push(self, image: str, *, auth: RegistryAuth | None) -> str:
        async with self._fence.held("push"):
            return await self._inner.push(image, auth=auth)

    async def tag(self, image: str, new: str) -> None:
        await self._inner.tag(image, new)  # a local tag: nothing leaves the host

    async def local_images(self, *, label: str) -> list[LocalImage]:
        return await self._inner.local_images(label=label)

    async def remove_image(self, tag: str) -> None:
        await self._inner.remove_image(tag)  # local: nothing leaves the host

    async def run(self, request: ContainerRun, *, on_line: Callable[[str], None]) -> TestRun:
        return await self._inner.run(request, on_line=on_line)


class FencedRegistry:
    """A tag move or a copy can put an older image under a tag another daemon just moved."""

    def __init__(self, inner: RegistryPort, fence: Fence) -> None:
        self._inner = inner
        self._fence = fence

    async def has_tag(
        self, *, registry: str, repository: str, tag: str, auth: RegistryAuth | None
    ) -> bool:
        return await self._inner.has_tag(
            registry=registry, repository=repository, tag=tag, auth=auth
        )

    async def copy(
        self,
        *,
        source_registry: str,
        source_repository: str,
        tag: str,
        target_registry: str,
        target_repository: str,
        source_auth: RegistryAuth | None,
        target_auth: RegistryAuth | None,
    ) -> str:
        async with self._fence.held("copy"):
            return await self._inner.copy(
                source_registry=source_registry,
                source_repository=source_repository,
                tag=tag,
                target_registry=target_registry,
                target_repository=target_repository,
                source_auth=source_auth,
                target_auth=target_auth,
            )

    async def retag(
        self, *, registry: str, repository: str, tag: str, new_tag: str, auth: RegistryAuth | None
    ) -> str:
        async with self._fence.held("retag"):
            return await self._inner.retag(
                registry=registry, repository=repository, tag=tag, new_tag=new_tag, auth=auth
            )

    async def digest(
        self, *, registry: str, repository: str, tag: str, auth: RegistryAuth | None
    ) -> str | None:
        return await self._inner.digest(
            registry=registry, repository=repository, tag=tag, auth=auth
        )


class FencedSchedules:
    """A schedule moved by a daemon that lost the app could name a revision another daemon
    already put back."""

    def __init__(self, inner: SchedulesPort, fence: Fence) -> None:
        self._inner = inner
        self._fence = fence

    async def rule_targets(self, rule: str) -> list[dict[str, Any]]:
        return await self._inner.rule_targets(rule)

    async def put_targets(self, rule: str, targets: Sequence[dict[str, Any]]) -> None:
        async with self._fence.held("PutTargets"):
            await self._inner.put_targets(rule, targets)

    async def schedule(self, *, group: str, name: str) -> dict[str, Any]:
        return await self._inner.schedule(group=group, name=name)

    async def update_schedule(self, request: dict[str, Any]) -> None:
        async with self._fence.held("UpdateSchedule"):
            await self._inner.update_schedule(request)

    def update_fields(self) -> frozenset[str]:
        return self._inner.update_fields()


def fenced(adapters: Adapters, fence: Fence) -> Adapters:
    """`adapters` with the app's AWS and registry writes held to its lease by `fence`."""
    housekeeping = adapters.housekeeping
    schedules = adapters.schedules
    return dataclasses.replace(
        adapters,
        docker=FencedDocker(adapters.docker, fence),
        registry=FencedRegistry(adapters.registry, fence),
        ecs=FencedEcs(adapters.ecs, fence),
        housekeeping=None if housekeeping is None else FencedHousekeeping(housekeeping, fence),
        schedules=None if schedules is None else FencedSchedules(schedules, fence),
    )
