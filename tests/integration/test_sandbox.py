"""The embedded AWS: rolling-update progression, fault injection and call counts over HTTP."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ecs.models import ecs_backends

from reconciler.cluster.table import LeaseTable
from reconciler.sandbox import ProvisionedApp, SandboxAws, Scenario, provision_app

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ecs.literals import DesiredStatusType
    from mypy_boto3_ecs.type_defs import ContainerDefinitionOutputTypeDef, TaskTypeDef

REGION = "us-east-1"
SERVICE = "web"
DESIRED = 2
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# Clients from one session share its parsed service models, which keeps the suite fast.
SESSION = boto3.session.Session(
    region_name=REGION,
    aws_access_key_id=CREDENTIALS["aws_access_key_id"],
    aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
)

Service = dict[str, Any]


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxAws]:
    with SandboxAws(region=REGION) as aws:
        yield aws


@pytest.fixture(autouse=True)
def _no_leftovers(sandbox: SandboxAws) -> None:
    # Each test owns a fresh cluster, so moto's (slower) full reset is not needed between them.
    sandbox.rollouts.reset()
    sandbox.faults.clear()
    sandbox.calls.reset()


def retrying(attempts: int) -> Config:
    return Config(retries={"mode": "standard", "total_max_attempts": attempts})


def ecs_client(sandbox: SandboxAws, *, attempts: int = 3) -> ECSClient:
    return SESSION.client("ecs", endpoint_url=sandbox.endpoint_url, config=retrying(attempts))


def ecr_client(sandbox: SandboxAws, *, attempts: int = 3) -> ECRClient:
    return SESSION.client("ecr", endpoint_url=sandbox.endpoint_url, config=retrying(attempts))


def provision(sandbox: SandboxAws, cluster: str, service: str = SERVICE) -> ProvisionedApp:
    return provision_app(
        endpoint_url=sandbox.endpoint_url,
        region=REGION,
        cluster=cluster,
        service=service,
        ecr_repository=f"{cluster}/{service}",
        family=f"{cluster}-{service}",
        image=f"registry.local/{service}:v1",
        desired_count=DESIRED,
    )


def primary(service: Service) -> dict[str, Any]:
    [deployment] = [d for d in service["deployments"] if d["status"] == "PRIMARY"]
    return dict(deployment)


@dataclass
class Harness:
    """One provisioned app on its own cluster, with the calls the tests make on it."""

    sandbox: SandboxAws
    ecs: ECSClient
    cluster: str
    app: ProvisionedApp

    def scenario(self, scenario: Scenario) -> None:
        self.sandbox.rollouts.set_scenario(self.cluster, SERVICE, scenario)

    def update_count(self) -> int:
        return self.sandbox.rollouts.update_service_count(self.cluster, SERVICE)

    def describe(self, service: str = SERVICE) -> Service:
        found = self.ecs.describe_services(cluster=self.cluster, services=[service])
        return dict(found["services"][0])

    def update(self, task_definition: str, ecs: ECSClient | None = None) -> Service:
        answer = (ecs or self.ecs).update_service(
            cluster=self.cluster, service=SERVICE, taskDefinition=task_definition
        )
        return dict(answer["service"])

    def new_revision(self, image: str) -> str:
        """A copy of the live task definition with the app image changed, as the daemon makes."""
        live = self.describe()["taskDefinition"]
        current = self.ecs.describe_task_definition(taskDefinition=live)["taskDefinition"]

        def with_image(c: ContainerDefinitionOutputTypeDef) -> ContainerDefinitionOutputTypeDef:
            return {**c, "image": image} if c["name"] == "app" else c

        containers = [with_image(c) for c in current["containerDefinitions"]]
        registered = self.ecs.register_task_definition(
            family=current["family"],
            containerDefinitions=containers,
            requiresCompatibilities=current["requiresCompatibilities"],
            networkMode=current["networkMode"],
            cpu=current["cpu"],
            memory=current["memory"],
        )
        return str(registered["taskDefinition"]["taskDefinitionArn"])

    def poll(
        self, settled: Callable[[Service], bool], seen: list[Service] | None = None
    ) -> Service:
        """Describe until `settled` holds; the deadline only stops a broken sandbox hanging."""
        deadline = time.monotonic() + 10
        while True:
            service = self.describe()
            if seen is not None:
                seen.append(service)
            if settled(service):
                return service
            if time.monotonic() > deadline:
                pytest.fail(f"the rollout never settled: {service['deployments']}")
            time.sleep(0.02)

    def tasks(
        self, service: str = SERVICE, *, desired_status: DesiredStatusType | None = None
    ) -> list[TaskTypeDef]:
        arns = (
            self.ecs.list_tasks(cluster=self.cluster, serviceName=service)
            if desired_status is None
            else self.ecs.list_tasks(
                cluster=self.cluster, serviceName=service, desiredStatus=desired_status
            )
        )
        if not arns["taskArns"]:
            return []
        return list(self.ecs.describe_tasks(cluster=self.cluster, tasks=arns["taskArns"])["tasks"])


@pytest.fixture
def web(sandbox: SandboxAws) -> Harness:
    cluster = f"c-{uuid.uuid4().hex[:10]}"
    return Harness(sandbox, ecs_client(sandbox), cluster, provision(sandbox, cluster))


def test_provisioned_service_is_steady(sandbox: SandboxAws, web: Harness) -> None:
    service = web.describe()
    assert service["serviceArn"] == web.app.service_arn
    assert service["taskDefinition"] == web.app.task_definition_arn
    assert service["runningCount"] == DESIRED
    [deployment] = service["deployments"]
    assert re.fullmatch(r"ecs-svc/\d+", deployment["id"])
    assert deployment["status"] == "PRIMARY"
    assert deployment["rolloutState"] == "COMPLETED"
    assert deployment["runningCount"] == deployment["desiredCount"] == DESIRED
    breaker = service["deploymentConfiguration"]["deploymentCircuitBreaker"]
    assert breaker == {"enable": True, "rollback": True}

    described = web.ecs.describe_task_definition(
        taskDefinition=web.app.task_definition_arn, include=["TAGS"]
    )
    definition = described["taskDefinition"]
    assert [c["name"] for c in definition["containerDefinitions"]] == ["app", "log-router"]
    app_container = definition["containerDefinitions"][0]
    assert app_container["image"] == "registry.local/web:v1"
    assert app_container["environment"] == [{"name": "MODE", "value": "sandbox"}]
    assert (definition["cpu"], definition["memory"], definition["networkMode"]) == (
        "256",
        "512",
        "awsvpc",
    )
    assert described["tags"] == [{"key": "team", "value": "sandbox"}]
    ecr = ecr_client(sandbox)
    found = ecr.describe_repositories(repositoryNames=[f"{web.cluster}/web"])["repositories"]
    assert found[0]["repositoryUri"] == web.app.repository_uri

    # Counted in both protocols: JSON (X-Amz-Target) and query (Action in the form body).
    assert sandbox.calls.count("CreateService") == 1
    assert sandbox.calls.count("DescribeSubnets") == 1
    assert provision(sandbox, web.cluster) == web.app  # idempotent: nothing new made
    assert sandbox.calls.count("CreateService") == 1
    family = f"{web.cluster}-web"
    assert len(web.ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]) == 1
    assert web.ecs.list_services(cluster=web.cluster)["serviceArns"] == [web.app.service_arn]


def test_complete_rollout_replaces_the_old_deployment(web: Harness) -> None:
    [old] = web.describe()["deployments"]
    target = web.new_revision("registry.local/web:v2")

    answer = web.update(target)

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

    done = web.poll(lambda s: primary(s)["rolloutState"] == "COMPLETED")
    [finished] = done["deployments"]
    assert finished["id"] == new["id"]
    assert finished["runningCount"] == DESIRED
    assert finished["rolloutStateReason"] == f"ECS deployment {new['id']} completed."
    assert done["taskDefinition"] == target
    assert web.update_count() == 1

    # Same task definition, no forceNewDeployment: nothing to roll out, nothing counted.
    again = web.update(target)
    assert [d["id"] for d in again["deployments"]] == [new["id"]]
    assert web.update_count() == 1


def test_forced_deployment_and_scaling(web: Harness) -> None:
    [before] = web.describe()["deployments"]
    old_tasks = {t["taskArn"] for t in web.tasks()}

    forced = web.ecs.update_service(cluster=web.cluster, service=SERVICE, forceNewDeployment=True)
    new, draining = forced["service"]["deployments"]
    assert (new["rolloutState"], new["taskDefinition"]) == ("IN_PROGRESS", before["taskDefinition"])
    assert draining["id"] == before["id"]
    web.poll(lambda s: len(s["deployments"]) == 1)
    assert web.update_count() == 0  # the task definition did not change
    replaced = {t["taskArn"] for t in web.tasks()}
    assert len(replaced) == DESIRED
    assert replaced.isdisjoint(old_tasks)  # a forced deployment starts fresh tasks

    # A desiredCount change alone scales the PRIMARY deployment in place.
    web.ecs.update_service(cluster=web.cluster, service=SERVICE, desiredCount=DESIRED + 1)
    [scaled] = web.describe()["deployments"]
    assert scaled["id"] == new["id"]
    assert scaled["desiredCount"] == scaled["runningCount"] == DESIRED + 1
    assert len(web.tasks()) == DESIRED + 1


def test_failed_rollout_rolls_back(web: Harness) -> None:
    web.scenario(Scenario("fail", after=0.05))
    target = web.new_revision("registry.local/web:broken")
    started = primary(web.update(target))

    seen: list[Service] = []
    final = web.poll(lambda s: s["taskDefinition"] == web.app.task_definition_arn, seen)

    rollback, failed = final["deployments"]
    assert (failed["id"], failed["status"], failed["rolloutState"]) == (
        started["id"],
        "ACTIVE",
        "FAILED",
    )
    assert "circuit breaker" in failed["rolloutStateReason"]
    assert failed["taskDefinition"] == target
    assert (rollback["status"], rollback["rolloutState"]) == ("PRIMARY", "COMPLETED")
    assert rollback["taskDefinition"] == web.app.task_definition_arn
    assert rollback["id"] != started["id"]
    completed_new = [
        d
        for s in seen
        for d in s["deployments"]
        if d["taskDefinition"] == target and d["rolloutState"] == "COMPLETED"
    ]
    assert completed_new == []
    # The service keeps running the previous revision's tasks.
    running = [t["taskDefinitionArn"] for t in web.tasks()]
    assert running == [web.app.task_definition_arn] * DESIRED
    # The failed deployment stays listed while nothing else happens.
    assert web.describe()["deployments"] == final["deployments"]


def test_stuck_rollout_stays_in_progress(web: Harness) -> None:
    web.scenario(Scenario("stick", after=0.05))
    target = web.new_revision("registry.local/web:v2")
    started = primary(web.update(target))
    time.sleep(0.1)  # past `after`: a stuck rollout must not settle then either

    for _ in range(3):
        service = web.describe()
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
    web.scenario(Scenario("complete"))
    assert [d["id"] for d in web.describe()["deployments"]] == [started["id"]]


@pytest.mark.parametrize("outcome", ["complete", "fail"])
def test_superseded_rollout(sandbox: SandboxAws, web: Harness, outcome: str) -> None:
    sandbox.rollouts.set_default(Scenario("stick"))
    second = web.new_revision("registry.local/web:v2")
    third = web.new_revision("registry.local/web:v3")
    superseded = primary(web.update(second))

    newest, middle, oldest = web.update(third)["deployments"]
    assert (newest["status"], newest["taskDefinition"]) == ("PRIMARY", third)
    assert (middle["id"], middle["status"], middle["rolloutState"]) == (
        superseded["id"],
        "ACTIVE",
        "IN_PROGRESS",
    )
    assert (oldest["taskDefinition"], oldest["rolloutState"]) == (
        web.app.task_definition_arn,
        "COMPLETED",
    )

    sandbox.rollouts.set_default(Scenario("complete" if outcome == "complete" else "fail"))
    final = web.describe()
    if outcome == "complete":
        assert [(d["id"], d["rolloutState"]) for d in final["deployments"]] == [
            (newest["id"], "COMPLETED")
        ]
        assert final["taskDefinition"] == third
    else:  # the circuit breaker goes back to the last revision that completed, not the middle one
        assert final["taskDefinition"] == web.app.task_definition_arn
        assert primary(final)["taskDefinition"] == web.app.task_definition_arn
    assert web.update_count() == 2


def test_tasks_follow_the_primary_deployment(sandbox: SandboxAws, web: Harness) -> None:
    worker = provision(sandbox, web.cluster, "worker")
    old_arns = {t["taskArn"] for t in web.tasks()}
    assert len(old_arns) == DESIRED
    target = web.new_revision("registry.local/web:v2")
    web.update(target)
    web.poll(lambda s: len(s["deployments"]) == 1)

    for _ in range(3):  # describing tasks must not walk them towards STOPPED
        tasks = web.tasks()
        assert len(tasks) == DESIRED
        assert {t["taskArn"] for t in tasks}.isdisjoint(old_arns)
        for task in tasks:
            assert (task["lastStatus"], task["desiredStatus"]) == ("RUNNING", "RUNNING")
            assert task["taskDefinitionArn"] == target
            assert [c["name"] for c in task["containers"]] == ["app", "log-router"]
            assert {c["lastStatus"] for c in task["containers"]} == {"RUNNING"}
    assert {t["taskArn"] for t in web.tasks(desired_status="STOPPED")} == old_arns
    # serviceName is honoured: the other service's tasks are its own.
    worker_definitions = {t["taskDefinitionArn"] for t in web.tasks("worker")}
    assert worker_definitions == {worker.task_definition_arn}


def test_throttling_fault_then_success(sandbox: SandboxAws, web: Harness) -> None:
    once = ecs_client(sandbox, attempts=1)
    sandbox.faults.inject("DescribeServices")

    with pytest.raises(ClientError) as raised:
        once.describe_services(cluster=web.cluster, services=[SERVICE])
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    assert raised.value.response["Error"]["Message"] == "Rate exceeded"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    found = once.describe_services(cluster=web.cluster, services=[SERVICE])["services"]
    assert found[0]["serviceArn"] == web.app.service_arn


@pytest.mark.parametrize(
    ("status", "code"), [(500, "ServerException"), (503, "ServiceUnavailableException")]
)
def test_server_faults_never_reach_moto(
    sandbox: SandboxAws, web: Harness, status: int, code: str
) -> None:
    once = ecs_client(sandbox, attempts=1)
    target = web.new_revision("registry.local/web:v2")
    sandbox.faults.inject("UpdateService", status=status, code=code, message="try again")

    with pytest.raises(ClientError) as raised:
        web.update(target, once)
    assert raised.value.response["Error"]["Code"] == code
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert web.describe()["taskDefinition"] == web.app.task_definition_arn
    assert web.update_count() == 0

    # `times` faults are used up, one request each; the request after them goes through.
    sandbox.faults.inject("UpdateService", times=2, status=status, code=code)
    for _ in range(2):
        with pytest.raises(ClientError):
            web.update(target, once)
    assert web.update(target, once)["taskDefinition"] == target
    assert web.update_count() == 1


def test_wildcard_fault_hits_any_action(sandbox: SandboxAws) -> None:
    ecr = ecr_client(sandbox, attempts=1)
    sandbox.faults.inject("*", code="AccessDeniedException", message="no")
    with pytest.raises(ClientError) as raised:
        ecr.get_authorization_token()
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
    assert ecr.get_authorization_token()["authorizationData"]


def test_call_counter_counts_per_action(sandbox: SandboxAws, web: Harness) -> None:
    sandbox.calls.reset()
    sandbox.faults.inject("DescribeServices")
    with pytest.raises(ClientError):
        ecs_client(sandbox, attempts=1).describe_services(cluster=web.cluster, services=[SERVICE])
    for _ in range(3):
        web.describe()
    web.ecs.list_services(cluster=web.cluster)

    assert sandbox.calls.count("DescribeServices") == 4  # the faulted one included
    assert sandbox.calls.snapshot() == {"DescribeServices": 4, "ListServices": 1}
    sandbox.calls.reset()
    assert sandbox.calls.count("DescribeServices") == 0


def test_in_process_moto_keeps_its_own_behaviour(web: Harness) -> None:
    # Only requests the sandbox serves get rollouts; direct backend use elsewhere is untouched.
    target = web.new_revision("registry.local/web:v2")
    backend = ecs_backends[DEFAULT_ACCOUNT_ID][REGION]
    service = backend.update_service(
        {"cluster": web.cluster, "service": SERVICE, "task_definition": target}
    )
    assert len(service.deployments) == 1
    assert web.update_count() == 0


async def test_aiobotocore_sees_the_rollout(sandbox: SandboxAws, web: Harness) -> None:
    config = AioConfig(retries={"mode": "standard", "total_max_attempts": 1})
    target = web.new_revision("registry.local/web:v2")
    async with AioSession().create_client(
        "ecs",
        region_name=REGION,
        endpoint_url=sandbox.endpoint_url,
        config=config,
        aws_access_key_id=CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
    ) as ecs:
        answer = await ecs.update_service(
            cluster=web.cluster, service=SERVICE, taskDefinition=target
        )
        started = primary(dict(answer["service"]))
        assert started["rolloutState"] == "IN_PROGRESS"

        sandbox.faults.inject("DescribeServices")
        with pytest.raises(ClientError) as raised:
            await ecs.describe_services(cluster=web.cluster, services=[SERVICE])
        assert raised.value.response["Error"]["Code"] == "ThrottlingException"

        described = await ecs.describe_services(cluster=web.cluster, services=[SERVICE])
        [deployment] = described["services"][0]["deployments"]
        assert (deployment["id"], deployment["rolloutState"]) == (started["id"], "COMPLETED")


# Last in the file: moto's full reset makes the next test rebuild every backend it uses.
def test_reset_empties_aws_and_forgets_settings(sandbox: SandboxAws, web: Harness) -> None:
    web.scenario(Scenario("stick"))
    web.update(web.new_revision("registry.local/web:v2"))
    sandbox.faults.inject("ListClusters")
    assert web.update_count() == 1

    sandbox.reset()

    assert web.update_count() == 0
    assert sandbox.calls.snapshot() == {}
    assert web.ecs.list_clusters()["clusterArns"] == []  # and the fault is gone with the rest
    assert sandbox.rollouts.scenario_for(web.cluster, SERVICE) == Scenario()


def test_sandbox_refuses_to_listen_beyond_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SandboxAws(host="0.0.0.0")  # noqa: S104
    with pytest.raises(ValueError, match="outcome"):
        Scenario("explode")  # type: ignore[arg-type]


async def test_item_reads_answer_every_attribute_type_as_dynamodb_does(
    sandbox: SandboxAws,
) -> None:
    """Item reads skip moto's serializer when their answer is plain JSON; what boto reads
    back is the same either way, binary attributes (moto's serializer) included."""
    name = f"items-{uuid.uuid4().hex[:8]}"
    async with LeaseTable.connect(
        name=name, region=REGION, endpoint_url=sandbox.endpoint_url
    ) as table:
        assert await table.create()
    client = SESSION.client("dynamodb", endpoint_url=sandbox.endpoint_url)
    plain: dict[str, Any] = {
        "pk": {"S": "p"},
        "sk": {"S": "plain"},
        "text": {"S": 'quote " and ünïcode'},
        "number": {"N": "12.5"},
        "flag": {"BOOL": True},
        "nothing": {"NULL": True},
        "list": {"L": [{"S": "a"}, {"N": "1"}]},
        "map": {"M": {"inner": {"SS": ["x", "y"]}}},
    }
    binary: dict[str, Any] = {"pk": {"S": "p"}, "sk": {"S": "binary"}, "blob": {"B": b"\x00\xff"}}
    for item in (plain, binary):
        client.put_item(TableName=name, Item=item)
    key = {"pk": plain["pk"], "sk": plain["sk"]}
    assert client.get_item(TableName=name, Key=key, ConsistentRead=True)["Item"] == plain
    queried = client.query(
        TableName=name,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "p"}},
    )
    assert queried["Items"] == [binary, plain]
    assert queried["Count"] == 2
    answer = client.batch_get_item(
        RequestItems={name: {"Keys": [key, {"pk": {"S": "p"}, "sk": {"S": "gone"}}]}}
    )
    assert answer["Responses"][name] == [plain]
    client.delete_table(TableName=name)
