"""The ECS adapter's service deployment calls and rollout settings, against the sandbox."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import boto3
import pytest

from reconciler.adapters.ecs import Ecs, boto_config
from reconciler.adapters.ecs_answers import DESCRIBE_DEPLOYMENTS_BATCH, service_state
from reconciler.decisions.model import RolloutSettings, ServiceDeployment, utcnow
from reconciler.errors import AwsRejected, AwsUnavailable
from reconciler.sandbox.aws import SandboxAws
from reconciler.sandbox.deployments import DEFAULT_ALARM
from reconciler.sandbox.provision import Controller, ProvisionedApp, Strategy, provision_app
from reconciler.sandbox.scenario import Scenario

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ecs.type_defs import ContainerDefinitionOutputTypeDef


SERVICE = "web"
# What the daemon allows for the two clocks differing (see reconciler/app/stages/watch.py).
SLACK = timedelta(seconds=30)
# botocore's max_attempts counts retries: each call is tried once more than that.
ATTEMPTS = 1 + int(boto_config().retries["max_attempts"])  # type: ignore[attr-defined]


@dataclass
class App:
    aws: SandboxAws
    ecs: ECSClient
    cluster: str
    provisioned: ProvisionedApp

    def new_revision(self, image: str) -> str:
        first = self.ecs.describe_task_definition(
            taskDefinition=self.provisioned.task_definition_arn
        )["taskDefinition"]

        def with_image(c: ContainerDefinitionOutputTypeDef) -> ContainerDefinitionOutputTypeDef:
            return {**c, "image": image} if c["name"] == "app" else c

        registered = self.ecs.register_task_definition(
            family=first["family"],
            containerDefinitions=[with_image(c) for c in first["containerDefinitions"]],
            requiresCompatibilities=first["requiresCompatibilities"],
            networkMode=first["networkMode"],
            cpu=first["cpu"],
            memory=first["memory"],
        )
        return str(registered["taskDefinition"]["taskDefinitionArn"])

    def scenario(self, scenario: Scenario) -> None:
        self.aws.rollouts.set_scenario(self.cluster, SERVICE, scenario)

    def arns(self) -> list[str]:
        """Every service deployment of the service, newest first."""
        arns: list[str] = []
        answer = self.ecs.list_service_deployments(cluster=self.cluster, service=SERVICE)
        while True:
            arns += [d["serviceDeploymentArn"] for d in answer["serviceDeployments"]]
            if "nextToken" not in answer:
                return arns
            answer = self.ecs.list_service_deployments(
                cluster=self.cluster, service=SERVICE, nextToken=answer["nextToken"]
            )


def make_app(
    aws: SandboxAws,
    *,
    strategy: Strategy | None = None,
    bake_minutes: int | None = None,
    alarms: Sequence[str] = (),
    controller: Controller | None = None,
    step_percent: float | None = None,
    step_bake_minutes: int | None = None,
) -> App:
    cluster = f"sd-{uuid.uuid4().hex[:10]}"
    provisioned = provision_app(
        endpoint_url=aws.endpoint_url,
        region=aws.region,
        cluster=cluster,
        service=SERVICE,
        ecr_repository=f"{cluster}/{SERVICE}",
        family=f"{cluster}-{SERVICE}",
        image="registry.local/web:v1",
        desired_count=2,
        strategy=strategy,
        bake_minutes=bake_minutes,
        alarms=alarms,
        controller=controller,
        step_percent=step_percent,
        step_bake_minutes=step_bake_minutes,
    )
    ecs = boto3.client("ecs", region_name=aws.region, endpoint_url=aws.endpoint_url)
    return App(aws, ecs, cluster, provisioned)


@pytest.fixture
def sandbox(aws: SandboxAws) -> SandboxAws:
    # Each test owns its clusters; scenarios, faults and counts are its own too.
    aws.rollouts.reset()
    aws.faults.clear()
    aws.calls.reset()
    return aws


@pytest.fixture
async def adapter(sandbox: SandboxAws) -> AsyncIterator[Ecs]:
    async with Ecs.connect(region=sandbox.region, endpoint_url=sandbox.endpoint_url) as ecs:
        yield ecs


async def watch(ecs: Ecs, app: App, arn: str) -> list[ServiceDeployment]:
    """Describe until the record is final; every answer that differs from the one before."""
    deadline = time.monotonic() + 20  # only stops a broken sandbox hanging the test
    seen: list[ServiceDeployment] = []
    while True:
        record = await ecs.describe_service_deployment(cluster=app.cluster, arn=arn)
        if not seen or (seen[-1].status, seen[-1].lifecycle_stage) != (
            record.status,
            record.lifecycle_stage,
        ):
            seen.append(record)
        if record.finished_at is not None:
            return seen
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.02)


# --- finding and watching ------------------------------------------------------------------


async def test_update_service_names_the_deployment_it_started(
    sandbox: SandboxAws, adapter: Ecs
) -> None:
    """currentServiceDeployment in UpdateService's answer: the record, with no call to find it."""
    app = make_app(sandbox)
    app.scenario(Scenario("stick"))
    target = app.new_revision("registry.local/web:v2")
    sandbox.calls.reset()
    started = await adapter.update_service(
        cluster=app.cluster, service=SERVICE, task_definition=target
    )
    assert sandbox.calls.snapshot() == {"UpdateService": 1}
    assert started.service_deployment == app.arns()[0]
    record = await adapter.describe_service_deployment(
        cluster=app.cluster, arn=started.service_deployment
    )
    assert record.status == "IN_PROGRESS"


async def test_find_the_deployment_update_service_started_and_watch_it(
    sandbox: SandboxAws, adapter: Ecs
) -> None:
    app = make_app(sandbox)
    app.scenario(Scenario("complete", after=0.3, bake=0.2))
    target = app.new_revision("registry.local/web:v2")
    since = utcnow()
    await adapter.update_service(cluster=app.cluster, service=SERVICE, task_definition=target)
    newest = app.arns()[0]
    sandbox.calls.reset()

    found = await adapter.find_service_deployment(
        cluster=app.cluster, service=SERVICE, task_definition=target, created_after=since - SLACK
    )

    # One list, one revision, one describe: the deployment's record, in full.
    assert sandbox.calls.snapshot() == {
        "ListServiceDeployments": 1,
        "DescribeServiceRevisions": 1,
        "DescribeServiceDeployments": 1,
    }
    assert found is not None
    assert found.arn == newest
    assert found.status == "IN_PROGRESS"
    # createdAt travels in milliseconds.
    assert found.created_at is not None and found.created_at >= since - timedelta(seconds=1)
    assert found.finished_at is None
    revision = app.ecs.describe_service_revisions(serviceRevisionArns=[found.target_revision])
    assert revision["serviceRevisions"][0]["taskDefinition"] == target

    seen = await watch(adapter, app, found.arn)
    assert [(r.status, r.lifecycle_stage) for r in seen][-2:] == [
        ("IN_PROGRESS", "BAKE_TIME"),
        ("SUCCESSFUL", "CLEAN_UP"),
    ]
    assert {r.status for r in seen[:-1]} == {"IN_PROGRESS"}
    assert seen[-1].finished_at is not None
    assert seen[-1].failed_tasks == 0 and seen[-1].alarms_triggered == ()

    # Revisions never change: a second find asks for none of them again.
    sandbox.calls.reset()
    again = await adapter.find_service_deployment(
        cluster=app.cluster, service=SERVICE, task_definition=target, created_after=since - SLACK
    )
    assert again is not None and (again.arn, again.status) == (found.arn, "SUCCESSFUL")
    assert sandbox.calls.snapshot() == {
        "ListServiceDeployments": 1,
        "DescribeServiceDeployments": 1,
    }


async def test_find_matches_the_task_definition_and_the_time(
    sandbox: SandboxAws, adapter: Ecs
) -> None:
    app = make_app(sandbox)
    app.scenario(Scenario("stick"))
    first = app.provisioned.task_definition_arn
    since = utcnow()
    second = app.new_revision("registry.local/web:v2")
    await adapter.update_service(cluster=app.cluster, service=SERVICE, task_definition=second)
    third = app.new_revision("registry.local/web:v3")
    await adapter.update_service(cluster=app.cluster, service=SERVICE, task_definition=third)
    newest, middle, created = app.arns()

    async def find(task_definition: str, after: datetime) -> ServiceDeployment | None:
        return await adapter.find_service_deployment(
            cluster=app.cluster,
            service=SERVICE,
            task_definition=task_definition,
            created_after=after,
        )

    found_third, found_second = await find(third, since - SLACK), await find(second, since - SLACK)
    assert found_third is not None and (found_third.arn, found_third.status) == (
        newest,
        "IN_PROGRESS",
    )
    assert found_second is not None and (found_second.arn, found_second.status) == (
        middle,
        "STOPPED",  # superseded by the third
    )
    # The slack reaches back to the service's creation, whose deployment ran the first one.
    found_first = await find(first, since - SLACK)
    assert found_first is not None and (found_first.arn, found_first.status) == (
        created,
        "SUCCESSFUL",
    )
    assert await find(third, since + timedelta(hours=1)) is None
    assert await find(f"{first.rpartition(':')[0]}:99", since - SLACK) is None


async def test_find_pages_through_many_deployments(sandbox: SandboxAws, adapter: Ecs) -> None:
    """The first revision's deployment is the oldest of 25: on the second page of 20."""
    app = make_app(sandbox)
    app.scenario(Scenario("stick"))
    since = utcnow()
    for i in range(24):
        target = app.new_revision(f"registry.local/web:v{i + 2}")
        app.ecs.update_service(cluster=app.cluster, service=SERVICE, taskDefinition=target)
    oldest = app.arns()[-1]
    sandbox.calls.reset()

    found = await adapter.find_service_deployment(
        cluster=app.cluster,
        service=SERVICE,
        task_definition=app.provisioned.task_definition_arn,
        created_after=since - SLACK,
    )

    assert found is not None and found.arn == oldest
    # Two pages; the 20 revisions of the first in one call, the last 5 in another.
    assert sandbox.calls.snapshot() == {
        "ListServiceDeployments": 2,
        "DescribeServiceRevisions": 2,
        "DescribeServiceDeployments": 1,
    }


async def test_no_service_deployments_for_other_controllers(
    sandbox: SandboxAws, adapter: Ecs
) -> None:
    app = make_app(sandbox, controller="EXTERNAL")
    target = app.new_revision("registry.local/web:v2")
    app.ecs.update_service(cluster=app.cluster, service=SERVICE, taskDefinition=target)
    found = await adapter.find_service_deployment(
        cluster=app.cluster, service=SERVICE, task_definition=target, created_after=utcnow() - SLACK
    )
    assert found is None


# --- describing ---------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 20, 45])
async def test_concurrent_describes_share_batched_calls(
    sandbox: SandboxAws, adapter: Ecs, count: int
) -> None:
    app = make_app(sandbox)
    app.scenario(Scenario("stick"))
    for i in range(count - 1):
        target = app.new_revision(f"registry.local/web:v{i + 2}")
        app.ecs.update_service(cluster=app.cluster, service=SERVICE, taskDefinition=target)
    arns = app.arns()
    assert len(arns) == count
    sandbox.calls.reset()

    # Every app watching its rollout asks at once; some ask twice.
    asks = [*arns, *arns[:3]]
    records = await asyncio.gather(
        *(adapter.describe_service_deployment(cluster=app.cluster, arn=a) for a in asks)
    )

    assert [r.arn for r in records] == asks
    calls = math.ceil(count / DESCRIBE_DEPLOYMENTS_BATCH)
    assert sandbox.calls.snapshot() == {"DescribeServiceDeployments": calls}
    by_arn = {r.arn: r.status for r in records}
    assert by_arn[arns[0]] == "SUCCESSFUL" if count == 1 else "IN_PROGRESS"
    assert {by_arn[a] for a in arns[1:-1]} <= {"STOPPED"}  # superseded one by one


async def test_an_unknown_deployment_fails_only_its_own_askers(
    sandbox: SandboxAws, adapter: Ecs
) -> None:
    app = make_app(sandbox)
    [known] = app.arns()
    unknown = known + "x"
    results = await asyncio.gather(
        adapter.describe_service_deployment(cluster=app.cluster, arn=known),
        adapter.describe_service_deployment(cluster=app.cluster, arn=unknown),
        return_exceptions=True,
    )
    found, missing = results
    assert isinstance(found, ServiceDeployment) and found.status == "SUCCESSFUL"
    assert isinstance(missing, AwsRejected)
    assert "not found" in str(missing) and "MISSING" in str(missing)
    assert sandbox.calls.count("DescribeServiceDeployments") == 1


async def test_records_of_failures_alarms_and_stops(sandbox: SandboxAws, adapter: Ecs) -> None:
    failing = make_app(sandbox)
    failing.scenario(Scenario("fail", after=0.05))
    alarmed = make_app(sandbox, strategy="BLUE_GREEN", alarms=["latency"])
    alarmed.scenario(Scenario("alarm", after=0.05, bake=0.1))
    stopped = make_app(sandbox)
    stopped.scenario(Scenario("stick"))
    arns = {}
    for app in (failing, alarmed, stopped):
        target = app.new_revision("registry.local/web:v2")
        await adapter.update_service(cluster=app.cluster, service=SERVICE, task_definition=target)
        arns[app.cluster] = app.arns()[0]
    stopped.ecs.stop_service_deployment(
        serviceDeploymentArn=arns[stopped.cluster], stopType="ABORT"
    )

    failed, rolled_back, aborted = await asyncio.gather(
        *(watch(adapter, app, arns[app.cluster]) for app in (failing, alarmed, stopped))
    )

    assert (failed[-1].status, failed[-1].failed_tasks) == ("ROLLBACK_SUCCESSFUL", 3)
    assert "circuit breaker" in failed[-1].status_reason
    assert failed[-1].rollback_reason
    assert rolled_back[-1].status == "ROLLBACK_SUCCESSFUL"
    assert rolled_back[-1].alarms_triggered == ("latency",)
    assert rolled_back[-1].lifecycle_stage == "BAKE_TIME"
    assert DEFAULT_ALARM not in rolled_back[-1].alarms_triggered
    assert aborted[-1].status == "STOPPED"
    assert aborted[-1].finished_at is not None  # from stoppedAt
    assert aborted[-1].rollback_reason == ""


# --- rollout settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, RolloutSettings("ECS", "ROLLING", 0.0)),
        ({"controller": "CODE_DEPLOY"}, RolloutSettings("CODE_DEPLOY", "ROLLING", 0.0)),
        ({"controller": "EXTERNAL"}, RolloutSettings("EXTERNAL", "ROLLING", 0.0)),
        (
            {"strategy": "BLUE_GREEN", "bake_minutes": 5},
            RolloutSettings("ECS", "BLUE_GREEN", 300.0),
        ),
        # 1 minute of bake, then 4 steps of 25% with 2 minutes each.
        (
            {"strategy": "LINEAR", "bake_minutes": 1, "step_percent": 25.0, "step_bake_minutes": 2},
            RolloutSettings("ECS", "LINEAR", 540.0),
        ),
        # 30% steps: 30, 60, 90, 100 -- four steps too.
        (
            {"strategy": "LINEAR", "step_percent": 30.0, "step_bake_minutes": 1},
            RolloutSettings("ECS", "LINEAR", 240.0),
        ),
        (
            {"strategy": "CANARY", "bake_minutes": 2, "step_percent": 10.0, "step_bake_minutes": 3},
            RolloutSettings("ECS", "CANARY", 300.0),
        ),
    ],
)
async def test_rollout_settings_are_read_from_the_service(
    sandbox: SandboxAws, adapter: Ecs, settings: dict[str, object], expected: RolloutSettings
) -> None:
    app = make_app(sandbox, **settings)  # type: ignore[arg-type]
    state = await adapter.describe_service(app.cluster, SERVICE)
    assert state.rollout == expected
    # The creation's record, except where another controller keeps none.
    named = app.arns()[0] if expected.controller == "ECS" else None
    assert state.current_service_deployment == named


def test_current_service_deployment_is_read_where_an_answer_has_it() -> None:
    raw = {
        "serviceName": SERVICE,
        "taskDefinition": "arn:aws:ecs:us-east-1:123456789012:task-definition/web:2",
        "currentServiceDeployment": "arn:aws:ecs:us-east-1:123456789012:service-deployment/c/web/x",
        "deploymentConfiguration": {"strategy": "ROLLING", "bakeTimeInMinutes": 3},
    }
    state = service_state("c", raw)
    assert state.current_service_deployment == raw["currentServiceDeployment"]
    assert state.rollout == RolloutSettings("ECS", "ROLLING", 180.0)
    assert service_state("c", {"serviceName": SERVICE}).current_service_deployment is None


# --- errors ----------------------------------------------------------------------------------


async def test_access_denied_is_rejected_so_the_caller_falls_back(
    sandbox: SandboxAws, adapter: Ecs
) -> None:
    app = make_app(sandbox)
    sandbox.faults.inject(
        "ListServiceDeployments",
        code="AccessDeniedException",
        message="User is not authorized to perform: ecs:ListServiceDeployments",
    )
    with pytest.raises(AwsRejected, match="AccessDeniedException"):
        await adapter.find_service_deployment(
            cluster=app.cluster,
            service=SERVICE,
            task_definition=app.provisioned.task_definition_arn,
            created_after=utcnow() - SLACK,
        )
    assert sandbox.calls.count("ListServiceDeployments") == 1  # not retried


async def test_a_region_without_service_deployments_finds_none(
    sandbox: SandboxAws, adapter: Ecs
) -> None:
    app = make_app(sandbox)
    sandbox.faults.inject(
        "ListServiceDeployments", code="UnsupportedFeatureException", message="not here"
    )
    found = await adapter.find_service_deployment(
        cluster=app.cluster,
        service=SERVICE,
        task_definition=app.provisioned.task_definition_arn,
        created_after=utcnow() - SLACK,
    )
    assert found is None


@pytest.mark.parametrize(
    ("action", "status", "code"),
    [
        ("ListServiceDeployments", 400, "ThrottlingException"),
        ("ListServiceDeployments", 500, "ServerException"),
        ("DescribeServiceRevisions", 400, "ThrottlingException"),
        ("DescribeServiceDeployments", 503, "ServiceUnavailableException"),
    ],
)
async def test_throttling_and_server_errors_are_transient(
    sandbox: SandboxAws, adapter: Ecs, action: str, status: int, code: str
) -> None:
    app = make_app(sandbox)
    # Every attempt botocore makes fails.
    sandbox.faults.inject(action, times=ATTEMPTS, status=status, code=code, message="Rate exceeded")
    with pytest.raises(AwsUnavailable):
        await adapter.find_service_deployment(
            cluster=app.cluster,
            service=SERVICE,
            task_definition=app.provisioned.task_definition_arn,
            created_after=utcnow() - SLACK,
        )
    assert sandbox.calls.count(action) == ATTEMPTS
    # Nothing failed is cached: the next find goes through.
    found = await adapter.find_service_deployment(
        cluster=app.cluster,
        service=SERVICE,
        task_definition=app.provisioned.task_definition_arn,
        created_after=utcnow() - SLACK,
    )
    assert found is not None and found.status == "SUCCESSFUL"


async def test_throttled_batch_fails_every_asker_transiently(
    sandbox: SandboxAws, adapter: Ecs
) -> None:
    apps = [make_app(sandbox) for _ in range(3)]
    arns = [app.arns()[0] for app in apps]
    sandbox.faults.inject("DescribeServiceDeployments", times=ATTEMPTS)
    results = await asyncio.gather(
        *(
            adapter.describe_service_deployment(cluster=app.cluster, arn=arn)
            for app, arn in zip(apps, arns, strict=True)
        ),
        return_exceptions=True,
    )
    assert all(isinstance(r, AwsUnavailable) for r in results), results
    assert sandbox.calls.count("DescribeServiceDeployments") == ATTEMPTS  # one call, retried
