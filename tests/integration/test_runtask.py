"""One-off tasks through the real ECS adapter, against the sandbox's task lifecycles.

Every call goes over HTTP through aiobotocore to the moto server, as the daemon's do; the
sandbox's `TaskScenario` decides how each task ends, and its records show what RunTask was
asked for.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest

from reconciler.adapters.ecs import Ecs
from reconciler.adapters.ecs_answers import launch_request, task_launch
from reconciler.adapters.values import TaskRunRequest
from reconciler.decisions.model import ServiceState, TaskLaunch, TaskState
from reconciler.errors import AwsRejected, StalledError
from reconciler.sandbox import ProvisionedApp, SandboxAws, provision_app
from reconciler.sandbox.tasks import TaskScenario
from tests.support.probes import eventually

REGION = "us-east-1"
SERVICE = "web"
STARTED_BY = "reconciler-pre-deploy"
COMMAND = ("sh", "-c", "migrate --to head")
LIFECYCLE = ("PROVISIONING", "PENDING", "RUNNING", "STOPPED")


@dataclass
class App:
    """One provisioned app on a cluster of its own, and the adapter to reach it."""

    aws: SandboxAws
    ecs: Ecs
    cluster: str
    provisioned: ProvisionedApp

    async def service(self) -> ServiceState:
        return await self.ecs.describe_service(self.cluster, SERVICE)

    def scenario(self, scenario: TaskScenario) -> None:
        self.aws.tasks.set_scenario(self.cluster, scenario)

    async def run(
        self, *, started_by: str = STARTED_BY, launch: TaskLaunch | None = None, token: str = ""
    ) -> str:
        if launch is None:
            launch = (await self.service()).launch
        request = TaskRunRequest(
            cluster=self.cluster,
            task_definition=self.provisioned.task_definition_arn,
            container="app",
            command=COMMAND,
            started_by=started_by,
            launch=launch,
            client_token=token,
        )
        return await self.ecs.run_task(request)

    async def describe(self, task: str) -> TaskState:
        return await self.ecs.describe_task(cluster=self.cluster, task=task)

    async def until(self, task: str, status: str, seen: list[str] | None = None) -> TaskState:
        """Describe `task` until it reaches `status`, noting each status seen on the way."""
        states: list[TaskState] = []

        async def reached() -> bool:
            state = await self.describe(task)
            states.append(state)
            if seen is not None and (not seen or seen[-1] != state.last_status):
                seen.append(state.last_status)
            return state.last_status == status

        await eventually(reached, timeout=10, what=f"task {task} {status}")
        return states[-1]


@pytest.fixture
async def app(aws: SandboxAws) -> AsyncIterator[App]:
    cluster = f"rt-{uuid.uuid4().hex[:10]}"
    provisioned = provision_app(
        endpoint_url=aws.endpoint_url,
        region=REGION,
        cluster=cluster,
        service=SERVICE,
        ecr_repository=f"{cluster}/{SERVICE}",
        family=f"{cluster}-{SERVICE}",
        image=f"registry.local/{cluster}:v1",
    )
    async with Ecs.connect(region=REGION, endpoint_url=aws.endpoint_url) as ecs:
        yield App(aws, ecs, cluster, provisioned)


def in_lifecycle_order(seen: list[str]) -> bool:
    return seen == sorted(seen, key=LIFECYCLE.index)


async def test_service_launch_is_read_from_describe_services(app: App) -> None:
    """provision_app makes a FARGATE service on awsvpc: one-off tasks must launch alike."""
    launch = (await app.service()).launch
    assert launch.launch_type == "FARGATE"
    assert launch.capacity_provider_strategy == ()
    assert launch.network_configuration is not None
    awsvpc = launch.network_configuration["awsvpcConfiguration"]
    assert isinstance(awsvpc, dict)
    assert awsvpc["subnets"]
    assert awsvpc["securityGroups"]
    assert awsvpc["assignPublicIp"] == "DISABLED"
    # moto answers no platformVersion for a service created without one (ECS says LATEST).
    assert launch.platform_version is None


async def test_task_that_exits_0_goes_through_its_lifecycle(app: App) -> None:
    app.scenario(TaskScenario(exit_code=0, starting=0.2, after=0.5))
    task = await app.run()
    seen: list[str] = []
    state = await app.until(task, "STOPPED", seen)
    assert "RUNNING" in seen
    assert in_lifecycle_order(seen), seen
    assert state.arn == task
    assert state.stop_code == "EssentialContainerExited"
    # Every container of the task definition is reported, the sidecar included.
    assert state.exit_codes == {"app": 0, "log-router": 0}
    assert state.container_reasons == {}


async def test_task_that_exits_1_reports_its_exit_code(app: App) -> None:
    app.scenario(TaskScenario(exit_code=1, after=0.2))
    task = await app.run()
    state = await app.until(task, "STOPPED")
    assert state.exit_codes["app"] == 1
    assert state.exit_codes["log-router"] == 0
    assert state.stop_code == "EssentialContainerExited"


async def test_task_that_never_starts_has_a_stop_code_and_reason_but_no_exit_code(
    app: App,
) -> None:
    app.scenario(TaskScenario(never_starts=True, after=0.3))
    task = await app.run()
    seen: list[str] = []
    state = await app.until(task, "STOPPED", seen)
    assert "RUNNING" not in seen
    assert in_lifecycle_order(seen), seen
    assert state.stop_code == "TaskFailedToStart"
    assert state.stopped_reason.startswith("CannotPullContainerError:")
    assert state.exit_codes == {"app": None, "log-router": None}
    assert state.container_reasons["app"].startswith("CannotPullContainerError:")


async def test_hanging_task_runs_until_stopped_then_is_killed(app: App) -> None:
    app.scenario(TaskScenario(hang=True, after=0.1))
    task = await app.run()
    await app.until(task, "RUNNING")
    await asyncio.sleep(0.3)  # well past `after`: a hanging task does not end by itself
    running = await app.describe(task)
    assert running.last_status == "RUNNING"
    assert running.exit_codes == {"app": None, "log-router": None}

    await app.ecs.stop_task(cluster=app.cluster, task=task, reason="pre-deploy timed out")
    state = await app.until(task, "STOPPED")
    assert state.stop_code == "UserInitiated"
    assert state.stopped_reason == "pre-deploy timed out"
    assert state.exit_codes["app"] == 137  # SIGKILL after the ignored SIGTERM

    # Stopping it again changes nothing, as in ECS.
    await app.ecs.stop_task(cluster=app.cluster, task=task, reason="again")
    assert (await app.describe(task)).stopped_reason == "pre-deploy timed out"


async def test_find_tasks_finds_the_running_task_by_started_by_only(app: App) -> None:
    app.scenario(TaskScenario(hang=True))
    running = await app.run()
    other = await app.run(started_by="someone-else")
    app.scenario(TaskScenario(after=0.1))
    ended = await app.run()
    await app.until(ended, "STOPPED")

    assert await app.ecs.find_tasks(cluster=app.cluster, started_by=STARTED_BY) == [running]
    assert await app.ecs.find_tasks(cluster=app.cluster, started_by="someone-else") == [other]
    assert await app.ecs.find_tasks(cluster=app.cluster, started_by="nobody") == []

    await app.ecs.stop_task(cluster=app.cluster, task=running, reason="done")
    assert await app.ecs.find_tasks(cluster=app.cluster, started_by=STARTED_BY) == []


async def test_a_task_still_starting_is_found(app: App) -> None:
    """desiredStatus RUNNING lists tasks that are not running yet: they must not be missed."""
    app.scenario(TaskScenario(starting=5, after=6))
    task = await app.run()
    assert (await app.describe(task)).last_status in ("PROVISIONING", "PENDING")
    assert await app.ecs.find_tasks(cluster=app.cluster, started_by=STARTED_BY) == [task]


async def test_command_override_and_launch_settings_reach_run_task(app: App) -> None:
    launch = (await app.service()).launch
    task = await app.run()
    [record] = app.aws.tasks.started(app.cluster)
    assert record.task_arns == (task,)
    assert record.count == 1
    assert record.started_by == STARTED_BY
    assert record.task_definition == app.provisioned.task_definition_arn
    assert record.overrides == {"containerOverrides": [{"name": "app", "command": list(COMMAND)}]}
    assert record.commands == {"app": COMMAND}
    assert record.launch_type == "FARGATE"
    assert record.capacity_provider_strategy == ()
    assert record.network_configuration == launch.network_configuration
    assert record.platform_version is None


async def test_capacity_providers_are_sent_instead_of_a_launch_type(app: App) -> None:
    service = (await app.service()).launch
    strategy = ({"capacityProvider": "FARGATE", "weight": 1, "base": 0},)
    launch = replace(
        service, launch_type=None, capacity_provider_strategy=strategy, platform_version="1.4.0"
    )
    await app.run(launch=launch)
    [record] = app.aws.tasks.started(app.cluster)
    assert record.launch_type is None
    assert record.capacity_provider_strategy == strategy
    assert record.platform_version == "1.4.0"
    assert record.network_configuration == service.network_configuration


async def test_run_task_failures_are_a_stalled_error_in_one_line(app: App) -> None:
    app.scenario(TaskScenario(failure="RESOURCE:MEMORY"))
    with pytest.raises(AwsRejected) as caught:
        await app.run()
    assert isinstance(caught.value, StalledError)
    message = str(caught.value)
    assert "RESOURCE:MEMORY" in message
    assert app.cluster in message
    assert "\n" not in message
    assert app.aws.tasks.started(app.cluster)[0].failures == ("RESOURCE:MEMORY",)


async def test_awsvpc_task_without_a_network_is_rejected(app: App) -> None:
    launch = replace((await app.service()).launch, network_configuration=None)
    with pytest.raises(AwsRejected, match="Network Configuration"):
        await app.run(launch=launch)


async def test_concurrent_describes_share_one_describe_tasks_call(app: App) -> None:
    app.scenario(TaskScenario(hang=True))
    tasks = [await app.run() for _ in range(3)]
    before = app.aws.calls.count("DescribeTasks")
    states = await asyncio.gather(*(app.describe(task) for task in tasks))
    assert [s.arn for s in states] == tasks
    assert app.aws.calls.count("DescribeTasks") - before == 1
    for task in tasks:
        await app.ecs.stop_task(cluster=app.cluster, task=task, reason="test over")


async def test_describing_an_unknown_task_is_rejected(app: App) -> None:
    app.scenario(TaskScenario(after=0.1))
    known = await app.run()
    unknown = known.rpartition("/")[0] + "/" + uuid.uuid4().hex
    described, missing = await asyncio.gather(
        app.describe(known), app.describe(unknown), return_exceptions=True
    )
    assert isinstance(described, TaskState)
    assert isinstance(missing, AwsRejected)
    assert unknown in str(missing)


# --- launch settings, from the answer shapes moto does not produce ----------------------


def test_launch_of_a_service_on_capacity_providers_is_passed_on_as_it_is() -> None:
    """moto's CreateService drops capacityProviderStrategy; ECS answers it, and RunTask
    must get it instead of a launch type."""
    strategy = [{"capacityProvider": "FARGATE_SPOT", "weight": 3, "base": 1}]
    network = {"awsvpcConfiguration": {"subnets": ["subnet-1"], "assignPublicIp": "ENABLED"}}
    raw = {
        "capacityProviderStrategy": strategy,
        "networkConfiguration": network,
        "platformVersion": "LATEST",
    }
    launch = task_launch(raw)
    assert launch == TaskLaunch(
        launch_type=None,
        capacity_provider_strategy=tuple(strategy),
        network_configuration=network,
        platform_version="LATEST",
    )
    assert launch_request(launch) == raw


def test_empty_launch_fields_count_as_absent() -> None:
    launch = task_launch({"launchType": "EC2", "networkConfiguration": {}, "platformVersion": ""})
    assert launch == TaskLaunch(launch_type="EC2")
    assert launch_request(launch) == {"launchType": "EC2"}
    assert launch_request(TaskLaunch()) == {}


async def test_a_batch_still_waiting_when_the_client_closes_is_not_sent(
    aws: SandboxAws,
) -> None:
    """A caller cancelled (a daemon stopping) while its DescribeServices waits for the
    batch window: the batch goes with the client instead of being sent after it closed."""
    calls = aws.calls.count("DescribeServices")
    async with Ecs.connect(region=REGION, endpoint_url=aws.endpoint_url) as ecs:
        caller = asyncio.create_task(ecs.describe_service("no-such-cluster", SERVICE))
        await asyncio.sleep(0)  # its batch is waiting for the window
        caller.cancel()
        assert ecs._services.busy
    assert not ecs._services.busy
    await asyncio.sleep(0.05)
    assert aws.calls.count("DescribeServices") == calls


async def test_runtask_again_with_its_client_token_answers_with_the_task_it_started(
    app: App,
) -> None:
    """As ECS does: the same clientToken is the same request, even after the task stopped."""
    app.scenario(TaskScenario(exit_code=0, after=0.0))
    first = await app.run(token="t" * 32)
    await app.until(first, "STOPPED")
    assert await app.run(token="t" * 32) == first
    other = await app.run(token="u" * 32)
    assert other != first
    assert len(app.aws.tasks.started(app.cluster)) == 2
