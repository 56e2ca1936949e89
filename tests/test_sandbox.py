"""The embedded AWS: rolling-update progression, fault injection and call counts over HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import aioboto3
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ecs.models import ecs_backends

from reconciler.sandbox import ProvisionedApp, SandboxAws, Scenario, provision_app

REGION = "us-east-1"
CLUSTER = "sandbox"
SERVICE = "web"
DESIRED = 2
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

Service = dict[str, Any]


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxAws]:
    with SandboxAws(region=REGION) as aws:
        yield aws


@pytest.fixture(autouse=True)
def _fresh_aws(sandbox: SandboxAws) -> None:
    sandbox.reset()


def client(sandbox: SandboxAws, name: str, *, max_attempts: int | None = None) -> Any:
    config = Config(retries={"mode": "standard", "max_attempts": max_attempts or 3})
    return boto3.client(
        name, endpoint_url=sandbox.endpoint_url, region_name=REGION, config=config, **CREDENTIALS
    )


@pytest.fixture
def ecs(sandbox: SandboxAws) -> Any:
    return client(sandbox, "ecs")


def provision(sandbox: SandboxAws, service: str = SERVICE) -> ProvisionedApp:
    return provision_app(
        endpoint_url=sandbox.endpoint_url,
        region=REGION,
        cluster=CLUSTER,
        service=service,
        ecr_repository=f"acme/{service}",
        family=service,
        image=f"registry.local/{service}:v1",
        desired_count=DESIRED,
    )


@pytest.fixture
def app(sandbox: SandboxAws) -> ProvisionedApp:
    return provision(sandbox)


def new_revision(ecs: Any, image: str) -> str:
    """A copy of the live task definition with the app image changed, as the daemon makes."""
    live = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
    current = ecs.describe_task_definition(taskDefinition=live["taskDefinition"])["taskDefinition"]
    containers = [
        {**c, "image": image} if c["name"] == "app" else c for c in current["containerDefinitions"]
    ]
    registered = ecs.register_task_definition(
        family=current["family"],
        containerDefinitions=containers,
        requiresCompatibilities=current["requiresCompatibilities"],
        networkMode=current["networkMode"],
        cpu=current["cpu"],
        memory=current["memory"],
    )
    return str(registered["taskDefinition"]["taskDefinitionArn"])


def describe(ecs: Any, service: str = SERVICE) -> Service:
    return dict(ecs.describe_services(cluster=CLUSTER, services=[service])["services"][0])


def poll(
    ecs: Any, settled: Callable[[Service], bool], seen: list[Service] | None = None
) -> Service:
    """Describe until `settled` holds; the deadline only stops a broken sandbox hanging."""
    deadline = time.monotonic() + 10
    while True:
        service = describe(ecs)
        if seen is not None:
            seen.append(service)
        if settled(service):
            return service
        if time.monotonic() > deadline:
            pytest.fail(f"the rollout never settled: {service['deployments']}")
        time.sleep(0.02)


def primary(service: Service) -> dict[str, Any]:
    [deployment] = [d for d in service["deployments"] if d["status"] == "PRIMARY"]
    return dict(deployment)


def update(ecs: Any, task_definition: str) -> Service:
    return dict(
        ecs.update_service(cluster=CLUSTER, service=SERVICE, taskDefinition=task_definition)[
            "service"
        ]
    )


def service_tasks(ecs: Any, service: str = SERVICE, **filters: str) -> list[dict[str, Any]]:
    arns = ecs.list_tasks(cluster=CLUSTER, serviceName=service, **filters)["taskArns"]
    if not arns:
        return []
    return list(ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"])


def test_provisioned_service_is_steady(sandbox: SandboxAws, ecs: Any, app: ProvisionedApp) -> None:
    service = describe(ecs)
    assert service["serviceArn"] == app.service_arn
    assert service["taskDefinition"] == app.task_definition_arn
    assert service["runningCount"] == DESIRED
    [deployment] = service["deployments"]
    assert re.fullmatch(r"ecs-svc/\d+", deployment["id"])
    assert deployment["status"] == "PRIMARY"
    assert deployment["rolloutState"] == "COMPLETED"
    assert deployment["runningCount"] == deployment["desiredCount"] == DESIRED
    breaker = service["deploymentConfiguration"]["deploymentCircuitBreaker"]
    assert breaker == {"enable": True, "rollback": True}

    described = ecs.describe_task_definition(
        taskDefinition=app.task_definition_arn, include=["TAGS"]
    )
    definition = described["taskDefinition"]
    assert [c["name"] for c in definition["containerDefinitions"]] == ["app", "log-router"]
    assert definition["containerDefinitions"][0]["environment"] == [
        {"name": "MODE", "value": "sandbox"}
    ]
    assert (definition["cpu"], definition["memory"], definition["networkMode"]) == (
        "256",
        "512",
        "awsvpc",
    )
    assert described["tags"] == [{"key": "team", "value": "sandbox"}]
    repositories = client(sandbox, "ecr").describe_repositories(repositoryNames=["acme/web"])
    assert repositories["repositories"][0]["repositoryUri"] == app.repository_uri

    assert provision(sandbox) == app  # idempotent: nothing new registered or created
    assert len(ecs.list_task_definitions(familyPrefix="web")["taskDefinitionArns"]) == 1
    assert ecs.list_services(cluster=CLUSTER)["serviceArns"] == [app.service_arn]


def test_complete_rollout_replaces_the_old_deployment(
    sandbox: SandboxAws, ecs: Any, app: ProvisionedApp
) -> None:
    [old] = describe(ecs)["deployments"]
    target = new_revision(ecs, "registry.local/web:v2")

    answer = update(ecs, target)

    # The UpdateService answer already shows the new deployment starting and the old draining.
    assert answer["taskDefinition"] == target
    new, draining = answer["deployments"]
    assert (new["status"], new["rolloutState"], new["runningCount"]) == (
        "PRIMARY",
        "IN_PROGRESS",
        0,
    )
    assert new["taskDefinition"] == target
    assert new["id"] != old["id"]
    assert (draining["id"], draining["status"], draining["rolloutState"]) == (
        old["id"],
        "ACTIVE",
        "COMPLETED",
    )

    done = poll(ecs, lambda s: primary(s)["rolloutState"] == "COMPLETED")
    [finished] = done["deployments"]
    assert finished["id"] == new["id"]
    assert finished["runningCount"] == DESIRED
    assert finished["rolloutStateReason"] == f"ECS deployment {new['id']} completed."
    assert done["taskDefinition"] == target
    assert sandbox.rollouts.update_service_count(CLUSTER, SERVICE) == 1

    # Same task definition, no forceNewDeployment: nothing to roll out, nothing counted.
    again = update(ecs, target)
    assert [d["id"] for d in again["deployments"]] == [new["id"]]
    assert sandbox.rollouts.update_service_count(CLUSTER, SERVICE) == 1


def test_failed_rollout_rolls_back(sandbox: SandboxAws, ecs: Any, app: ProvisionedApp) -> None:
    sandbox.rollouts.set_scenario(CLUSTER, SERVICE, Scenario("fail", after=0.05))
    target = new_revision(ecs, "registry.local/web:broken")
    started = primary(update(ecs, target))

    seen: list[Service] = []
    final = poll(ecs, lambda s: s["taskDefinition"] == app.task_definition_arn, seen)

    rollback, failed = final["deployments"]
    assert (failed["id"], failed["status"], failed["rolloutState"]) == (
        started["id"],
        "ACTIVE",
        "FAILED",
    )
    assert "circuit breaker" in failed["rolloutStateReason"]
    assert failed["taskDefinition"] == target
    assert rollback["status"] == "PRIMARY"
    assert rollback["taskDefinition"] == app.task_definition_arn
    assert rollback["rolloutState"] == "COMPLETED"
    assert rollback["id"] != started["id"]
    never_completed = [
        d
        for s in seen
        for d in s["deployments"]
        if d["taskDefinition"] == target and d["rolloutState"] == "COMPLETED"
    ]
    assert never_completed == []
    # The service keeps running the previous revision's tasks.
    tasks = service_tasks(ecs)
    assert [t["taskDefinitionArn"] for t in tasks] == [app.task_definition_arn] * DESIRED
    # The failed deployment stays listed while nothing else happens.
    assert describe(ecs)["deployments"] == final["deployments"]


def test_stuck_rollout_stays_in_progress(
    sandbox: SandboxAws, ecs: Any, app: ProvisionedApp
) -> None:
    sandbox.rollouts.set_scenario(CLUSTER, SERVICE, Scenario("stick", after=0.05))
    target = new_revision(ecs, "registry.local/web:v2")
    started = primary(update(ecs, target))
    time.sleep(0.1)  # past `after`: a stuck rollout must not settle then either

    for _ in range(3):
        service = describe(ecs)
        new, old = service["deployments"]
        assert new["id"] == started["id"]
        assert (new["status"], new["rolloutState"], new["runningCount"]) == (
            "PRIMARY",
            "IN_PROGRESS",
            0,
        )
        assert (old["status"], old["rolloutState"], old["runningCount"]) == (
            "ACTIVE",
            "COMPLETED",
            DESIRED,
        )
        assert service["taskDefinition"] == target

    # Progression reads the scenario when it looks, so a stuck rollout can be released.
    sandbox.rollouts.set_scenario(CLUSTER, SERVICE, Scenario("complete"))
    assert [d["id"] for d in describe(ecs)["deployments"]] == [started["id"]]


@pytest.mark.parametrize("outcome", ["complete", "fail"])
def test_superseded_rollout(
    sandbox: SandboxAws, ecs: Any, app: ProvisionedApp, outcome: str
) -> None:
    sandbox.rollouts.set_default(Scenario("stick"))
    second = new_revision(ecs, "registry.local/web:v2")
    third = new_revision(ecs, "registry.local/web:v3")
    superseded = primary(update(ecs, second))

    answer = update(ecs, third)
    newest, middle, oldest = answer["deployments"]
    assert (newest["status"], newest["taskDefinition"]) == ("PRIMARY", third)
    assert (middle["id"], middle["status"], middle["rolloutState"]) == (
        superseded["id"],
        "ACTIVE",
        "IN_PROGRESS",
    )
    assert (oldest["taskDefinition"], oldest["rolloutState"]) == (
        app.task_definition_arn,
        "COMPLETED",
    )

    sandbox.rollouts.set_default(Scenario("complete" if outcome == "complete" else "fail"))
    final = describe(ecs)
    if outcome == "complete":
        assert [(d["id"], d["rolloutState"]) for d in final["deployments"]] == [
            (newest["id"], "COMPLETED")
        ]
        assert final["taskDefinition"] == third
    else:  # the circuit breaker goes back to the last revision that completed, not the middle one
        assert final["taskDefinition"] == app.task_definition_arn
        assert primary(final)["taskDefinition"] == app.task_definition_arn
    assert sandbox.rollouts.update_service_count(CLUSTER, SERVICE) == 2


def test_tasks_follow_the_primary_deployment(
    sandbox: SandboxAws, ecs: Any, app: ProvisionedApp
) -> None:
    worker = provision(sandbox, "worker")
    old_arns = {t["taskArn"] for t in service_tasks(ecs)}
    assert len(old_arns) == DESIRED
    target = new_revision(ecs, "registry.local/web:v2")
    update(ecs, target)
    poll(ecs, lambda s: len(s["deployments"]) == 1)

    for _ in range(3):  # describing tasks must not walk them towards STOPPED
        tasks = service_tasks(ecs)
        assert len(tasks) == DESIRED
        assert {t["taskArn"] for t in tasks}.isdisjoint(old_arns)
        for task in tasks:
            assert (task["lastStatus"], task["desiredStatus"]) == ("RUNNING", "RUNNING")
            assert task["taskDefinitionArn"] == target
            assert [c["name"] for c in task["containers"]] == ["app", "log-router"]
            assert {c["lastStatus"] for c in task["containers"]} == {"RUNNING"}
    stopped = service_tasks(ecs, desiredStatus="STOPPED")
    assert {t["taskArn"] for t in stopped} == old_arns
    # serviceName is honoured: the other service's tasks are its own.
    assert {t["taskDefinitionArn"] for t in service_tasks(ecs, "worker")} == {
        worker.task_definition_arn
    }


def test_throttling_fault_then_success(sandbox: SandboxAws, app: ProvisionedApp) -> None:
    ecs = client(sandbox, "ecs", max_attempts=1)
    sandbox.calls.reset()
    sandbox.faults.inject("DescribeServices")

    with pytest.raises(ClientError) as raised:
        describe(ecs)
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    assert raised.value.response["Error"]["Message"] == "Rate exceeded"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    assert describe(ecs)["serviceArn"] == app.service_arn
    assert sandbox.calls.count("DescribeServices") == 2


@pytest.mark.parametrize(
    ("status", "code"), [(500, "ServerException"), (503, "ServiceUnavailableException")]
)
def test_server_faults_never_reach_moto(
    sandbox: SandboxAws, ecs: Any, app: ProvisionedApp, status: int, code: str
) -> None:
    target = new_revision(ecs, "registry.local/web:v2")
    sandbox.faults.inject("UpdateService", status=status, code=code, message="try again")

    with pytest.raises(ClientError) as raised:
        client(sandbox, "ecs", max_attempts=1).update_service(
            cluster=CLUSTER, service=SERVICE, taskDefinition=target
        )
    assert raised.value.response["Error"]["Code"] == code
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert describe(ecs)["taskDefinition"] == app.task_definition_arn
    assert sandbox.rollouts.update_service_count(CLUSTER, SERVICE) == 0

    # botocore retries 5xx: two more faults are absorbed by a client allowed three attempts.
    sandbox.faults.inject("UpdateService", times=2, status=status, code=code)
    before = sandbox.calls.count("UpdateService")
    update(client(sandbox, "ecs", max_attempts=3), target)
    assert sandbox.calls.count("UpdateService") - before == 3
    assert sandbox.rollouts.update_service_count(CLUSTER, SERVICE) == 1


def test_wildcard_fault_hits_any_action(sandbox: SandboxAws) -> None:
    ecr = client(sandbox, "ecr", max_attempts=1)
    sandbox.faults.inject("*", code="AccessDeniedException", message="no")
    with pytest.raises(ClientError) as raised:
        ecr.get_authorization_token()
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
    assert ecr.get_authorization_token()["authorizationData"]


def test_call_counter_counts_per_action(sandbox: SandboxAws, ecs: Any, app: ProvisionedApp) -> None:
    sandbox.calls.reset()
    sandbox.faults.inject("DescribeServices")
    with pytest.raises(ClientError):
        client(sandbox, "ecs", max_attempts=1).describe_services(
            cluster=CLUSTER, services=[SERVICE]
        )
    for _ in range(3):
        describe(ecs)
    ecs.list_services(cluster=CLUSTER)

    assert sandbox.calls.count("DescribeServices") == 4  # the faulted one included
    assert sandbox.calls.snapshot() == {"DescribeServices": 4, "ListServices": 1}
    sandbox.calls.reset()
    assert sandbox.calls.count("DescribeServices") == 0


def test_in_process_moto_keeps_its_own_behaviour(
    sandbox: SandboxAws, ecs: Any, app: ProvisionedApp
) -> None:
    # Only requests the sandbox serves get rollouts; direct backend use elsewhere is untouched.
    target = new_revision(ecs, "registry.local/web:v2")
    backend = ecs_backends[DEFAULT_ACCOUNT_ID][REGION]
    service = backend.update_service(
        {"cluster": CLUSTER, "service": SERVICE, "task_definition": target}
    )
    assert len(service.deployments) == 1
    assert sandbox.rollouts.update_service_count(CLUSTER, SERVICE) == 0


async def test_aiobotocore_sees_the_rollout(sandbox: SandboxAws, app: ProvisionedApp) -> None:
    session = aioboto3.Session(region_name=REGION, **CREDENTIALS)
    config = Config(retries={"mode": "standard", "max_attempts": 1})
    async with session.client("ecs", endpoint_url=sandbox.endpoint_url, config=config) as ecs:
        target = new_revision(client(sandbox, "ecs"), "registry.local/web:v2")
        answer = await ecs.update_service(cluster=CLUSTER, service=SERVICE, taskDefinition=target)
        started = primary(answer["service"])
        assert started["rolloutState"] == "IN_PROGRESS"

        sandbox.faults.inject("DescribeServices")
        with pytest.raises(ClientError) as raised:
            await ecs.describe_services(cluster=CLUSTER, services=[SERVICE])
        assert raised.value.response["Error"]["Code"] == "ThrottlingException"

        described = await ecs.describe_services(cluster=CLUSTER, services=[SERVICE])
        [deployment] = described["services"][0]["deployments"]
        assert (deployment["id"], deployment["rolloutState"]) == (started["id"], "COMPLETED")
