"""The sandbox's service deployment records, over HTTP with boto3.

Rollouts here run on a clock of the test's own (`RolloutController.clock`), so a test steps
through a rollout's stages in virtual seconds and checks when each one began, without waiting.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from reconciler.sandbox import Outcome, ProvisionedApp, SandboxAws, Scenario, provision_app
from reconciler.sandbox.deployments import DEFAULT_ALARM
from reconciler.sandbox.provision import Controller, Strategy

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ecs.literals import StopServiceDeploymentStopTypeType
    from mypy_boto3_ecs.type_defs import ContainerDefinitionOutputTypeDef

REGION = "us-east-1"
SERVICE = "web"
DESIRED = 2
SESSION = boto3.session.Session(
    region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
)
# Virtual seconds: the stages before BAKE_TIME share AFTER, then BAKE_TIME lasts BAKE, and a
# rollback (or a stop) takes ROLLBACK.
AFTER, BAKE, ROLLBACK = 12.0, 4.0, 2.0
STEP = 0.5  # how far the clock moves between looks; every boundary above is a multiple

Service = dict[str, Any]


class Clock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def aws() -> Iterator[SandboxAws]:
    with SandboxAws(region=REGION) as sandbox:
        yield sandbox


@pytest.fixture
def clock(aws: SandboxAws) -> Iterator[Clock]:
    # Each test owns fresh clusters, so moto's full reset is not needed between them.
    aws.rollouts.reset()
    aws.faults.clear()
    aws.calls.reset()
    fake = Clock()
    aws.rollouts.clock = fake
    yield fake
    aws.rollouts.reset()


@dataclass
class App:
    """One provisioned service on its own cluster, and the calls the tests make on it."""

    aws: SandboxAws
    clock: Clock
    ecs: ECSClient
    cluster: str
    provisioned: ProvisionedApp
    revisions: list[str] = field(default_factory=list)

    def scenario(self, scenario: Scenario) -> None:
        self.aws.rollouts.set_scenario(self.cluster, SERVICE, scenario)

    def service(self) -> Service:
        found = self.ecs.describe_services(cluster=self.cluster, services=[SERVICE])
        return dict(found["services"][0])

    def new_revision(self, image: str) -> str:
        """A copy of the first task definition with the app image changed."""
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

    def deploy(self, image: str = "registry.local/web:v2") -> tuple[str, str]:
        """UpdateService to a new revision; (its task definition, the service deployment)."""
        target = self.new_revision(image)
        self.ecs.update_service(cluster=self.cluster, service=SERVICE, taskDefinition=target)
        newest = self.listed()[0]
        return target, str(newest["serviceDeploymentArn"])

    def listed(self, **filters: Any) -> list[dict[str, Any]]:
        answer = self.ecs.list_service_deployments(cluster=self.cluster, service=SERVICE, **filters)
        return [dict(d) for d in answer["serviceDeployments"]]

    def describe(self, arn: str) -> dict[str, Any]:
        answer = self.ecs.describe_service_deployments(serviceDeploymentArns=[arn])
        [deployment] = answer["serviceDeployments"]
        return dict(deployment)

    def stop(self, arn: str, stop_type: StopServiceDeploymentStopTypeType | None = None) -> str:
        if stop_type is None:
            answer = self.ecs.stop_service_deployment(serviceDeploymentArn=arn)
        else:
            answer = self.ecs.stop_service_deployment(serviceDeploymentArn=arn, stopType=stop_type)
        return str(answer["serviceDeploymentArn"])

    def trace(self, arn: str, *, until: float, since: float = 0.0) -> list[tuple[float, str, str]]:
        """(virtual second first seen, status, lifecycleStage) at each change, looking every
        STEP seconds from `since` (after the deployment started) to `until`."""
        start = self.clock.now - since
        seen: list[tuple[float, str, str]] = []
        steps = round((until - since) / STEP)
        for i in range(steps + 1):
            self.clock.now = start + since + i * STEP
            record = self.describe(arn)
            if not seen or seen[-1][1:] != (record["status"], record["lifecycleStage"]):
                seen.append((since + i * STEP, record["status"], record["lifecycleStage"]))
        return seen


def ecs_client(aws: SandboxAws) -> ECSClient:
    config = Config(retries={"mode": "standard", "total_max_attempts": 1})
    return SESSION.client("ecs", endpoint_url=aws.endpoint_url, config=config)


def make_app(
    aws: SandboxAws,
    clock: Clock,
    *,
    strategy: Strategy | None = None,
    bake_minutes: int | None = None,
    alarms: Sequence[str] = (),
    controller: Controller | None = None,
    step_percent: float | None = None,
    step_bake_minutes: int | None = None,
    lifecycle_hooks: Sequence[dict[str, Any]] = (),
) -> App:
    cluster = f"d-{uuid.uuid4().hex[:10]}"
    provisioned = provision_app(
        endpoint_url=aws.endpoint_url,
        region=REGION,
        cluster=cluster,
        service=SERVICE,
        ecr_repository=f"{cluster}/{SERVICE}",
        family=f"{cluster}-{SERVICE}",
        image="registry.local/web:v1",
        desired_count=DESIRED,
        strategy=strategy,
        bake_minutes=bake_minutes,
        alarms=alarms,
        controller=controller,
        step_percent=step_percent,
        step_bake_minutes=step_bake_minutes,
        lifecycle_hooks=lifecycle_hooks,
    )
    return App(aws, clock, ecs_client(aws), cluster, provisioned)


@pytest.fixture
def web(aws: SandboxAws, clock: Clock) -> App:
    return make_app(aws, clock)


def primary(service: Service) -> dict[str, Any]:
    [deployment] = [d for d in service["deployments"] if d["status"] == "PRIMARY"]
    return dict(deployment)


# --- creation, revisions, counts ----------------------------------------------------------


def test_create_service_is_one_successful_deployment(aws: SandboxAws, web: App) -> None:
    [created] = web.listed()
    assert created["status"] == "SUCCESSFUL"
    assert created["serviceArn"] == web.provisioned.service_arn
    assert created["clusterArn"] == web.provisioned.cluster_arn
    assert created["serviceDeploymentArn"].startswith(
        f"arn:aws:ecs:{REGION}:123456789012:service-deployment/{web.cluster}/{SERVICE}/"
    )
    record = web.describe(created["serviceDeploymentArn"])
    assert record["lifecycleStage"] == "CLEAN_UP"
    assert record["sourceServiceRevisions"] == []
    assert record["finishedAt"] == record["createdAt"]
    # The record keeps the deploymentConfiguration the service was created with.
    breaker = record["deploymentConfiguration"]["deploymentCircuitBreaker"]
    assert breaker == {"enable": True, "rollback": True}
    assert record["deploymentCircuitBreaker"]["status"] == "MONITORING_COMPLETE"
    assert record["alarms"] == {"status": "DISABLED"}

    revisions = web.ecs.describe_service_revisions(
        serviceRevisionArns=[created["targetServiceRevisionArn"]]
    )
    [revision] = revisions["serviceRevisions"]
    assert revision["taskDefinition"] == web.provisioned.task_definition_arn
    assert revision["serviceArn"] == web.provisioned.service_arn
    assert revision["launchType"] == "FARGATE"
    assert [i["containerName"] for i in revision["containerImages"]] == ["app", "log-router"]
    assert revision["containerImages"][0]["image"] == "registry.local/web:v1"
    assert revisions["failures"] == []

    assert aws.calls.count("ListServiceDeployments") == 1
    assert aws.calls.count("DescribeServiceDeployments") == 1
    assert aws.calls.count("DescribeServiceRevisions") == 1


def test_the_service_names_its_newest_deployment(web: App) -> None:
    """currentServiceDeployment, as ECS answers it: the creation's record, then the one each
    UpdateService starts, in UpdateService's own answer too; a change that starts no
    deployment (desiredCount) leaves it."""
    web.scenario(Scenario("stick"))
    [created] = web.listed()
    assert web.service()["currentServiceDeployment"] == created["serviceDeploymentArn"]
    target = web.new_revision("registry.local/web:v2")
    answer = web.ecs.update_service(cluster=web.cluster, service=SERVICE, taskDefinition=target)
    newest = web.listed()[0]["serviceDeploymentArn"]
    assert newest != created["serviceDeploymentArn"]
    assert answer["service"]["currentServiceDeployment"] == newest
    assert web.service()["currentServiceDeployment"] == newest
    web.ecs.update_service(cluster=web.cluster, service=SERVICE, desiredCount=DESIRED + 1)
    assert web.service()["currentServiceDeployment"] == newest


def test_revisions_name_the_task_definitions_deployed(web: App) -> None:
    web.scenario(Scenario("complete", after=AFTER))
    [created] = web.listed()
    target, arn = web.deploy()
    record = web.describe(arn)
    [source] = record["sourceServiceRevisions"]
    assert source["arn"] == created["targetServiceRevisionArn"]
    assert (source["requestedTaskCount"], source["runningTaskCount"]) == (DESIRED, DESIRED)
    assert record["targetServiceRevision"]["requestedTaskCount"] == DESIRED

    unknown = record["targetServiceRevision"]["arn"] + "0"
    answer = web.ecs.describe_service_revisions(
        serviceRevisionArns=[record["targetServiceRevision"]["arn"], source["arn"], unknown]
    )
    definitions = [r["taskDefinition"] for r in answer["serviceRevisions"]]
    assert definitions == [target, web.provisioned.task_definition_arn]
    assert answer["serviceRevisions"][0]["containerImages"][0]["image"] == "registry.local/web:v2"
    assert answer["failures"] == [{"arn": unknown, "reason": "MISSING"}]


def test_deployment_calls_are_counted_and_faulted_like_the_others(
    aws: SandboxAws, web: App
) -> None:
    web.scenario(Scenario("stick"))
    _, arn = web.deploy()
    aws.calls.reset()
    aws.faults.inject("DescribeServiceDeployments")
    aws.faults.inject("ListServiceDeployments", code="AccessDeniedException", message="no")
    with pytest.raises(ClientError) as raised:
        web.describe(arn)
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    with pytest.raises(ClientError) as raised:
        web.listed()
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
    web.describe(arn)
    web.listed()
    web.stop(arn, "ABORT")
    assert aws.calls.snapshot() == {
        "DescribeServiceDeployments": 2,
        "ListServiceDeployments": 2,
        "StopServiceDeployment": 1,
    }


# --- lifecycles -----------------------------------------------------------------------------

R, B = "ROLLING", "BLUE_GREEN"
LIFECYCLES: dict[tuple[str, str], list[tuple[float, str, str]]] = {
    (R, "complete"): [
        (0.0, "IN_PROGRESS", "RECONCILE_SERVICE"),
        (6.0, "IN_PROGRESS", "SCALE_UP"),
        (12.0, "IN_PROGRESS", "BAKE_TIME"),
        (16.0, "SUCCESSFUL", "CLEAN_UP"),
    ],
    (R, "fail"): [
        (0.0, "IN_PROGRESS", "RECONCILE_SERVICE"),
        (6.0, "IN_PROGRESS", "SCALE_UP"),
        (12.0, "ROLLBACK_IN_PROGRESS", "SCALE_UP"),
        (14.0, "ROLLBACK_SUCCESSFUL", "SCALE_UP"),
    ],
    (R, "alarm"): [
        (0.0, "IN_PROGRESS", "RECONCILE_SERVICE"),
        (6.0, "IN_PROGRESS", "SCALE_UP"),
        (12.0, "IN_PROGRESS", "BAKE_TIME"),
        (14.0, "ROLLBACK_IN_PROGRESS", "BAKE_TIME"),
        (16.0, "ROLLBACK_SUCCESSFUL", "BAKE_TIME"),
    ],
    (R, "rollback_fail"): [
        (0.0, "IN_PROGRESS", "RECONCILE_SERVICE"),
        (6.0, "IN_PROGRESS", "SCALE_UP"),
        (12.0, "ROLLBACK_IN_PROGRESS", "SCALE_UP"),
        (14.0, "ROLLBACK_FAILED", "SCALE_UP"),
    ],
    (R, "stick"): [
        (0.0, "IN_PROGRESS", "RECONCILE_SERVICE"),
        (6.0, "IN_PROGRESS", "SCALE_UP"),
    ],
    (B, "complete"): [
        (0.0, "IN_PROGRESS", "SCALE_UP"),
        (4.0, "IN_PROGRESS", "TEST_TRAFFIC_SHIFT"),
        (8.0, "IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT"),
        (12.0, "IN_PROGRESS", "BAKE_TIME"),
        (16.0, "SUCCESSFUL", "CLEAN_UP"),
    ],
    (B, "fail"): [
        (0.0, "IN_PROGRESS", "SCALE_UP"),
        (12.0, "ROLLBACK_IN_PROGRESS", "SCALE_UP"),
        (14.0, "ROLLBACK_SUCCESSFUL", "SCALE_UP"),
    ],
    (B, "alarm"): [
        (0.0, "IN_PROGRESS", "SCALE_UP"),
        (4.0, "IN_PROGRESS", "TEST_TRAFFIC_SHIFT"),
        (8.0, "IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT"),
        (12.0, "IN_PROGRESS", "BAKE_TIME"),
        (14.0, "ROLLBACK_IN_PROGRESS", "BAKE_TIME"),
        (16.0, "ROLLBACK_SUCCESSFUL", "BAKE_TIME"),
    ],
    (B, "rollback_fail"): [
        (0.0, "IN_PROGRESS", "SCALE_UP"),
        (12.0, "ROLLBACK_IN_PROGRESS", "SCALE_UP"),
        (14.0, "ROLLBACK_FAILED", "SCALE_UP"),
    ],
    (B, "stick"): [(0.0, "IN_PROGRESS", "SCALE_UP")],
}


@pytest.mark.parametrize(("strategy", "outcome"), list(LIFECYCLES))
def test_lifecycle_per_strategy_and_outcome(
    aws: SandboxAws, clock: Clock, strategy: Strategy, outcome: Outcome
) -> None:
    # ROLLING by default, without a strategy named; the service's bake is not the sandbox's.
    app = make_app(aws, clock, strategy=None if strategy == R else strategy, bake_minutes=30)
    app.scenario(Scenario(outcome, after=AFTER, bake=BAKE, rollback=ROLLBACK))
    first = app.provisioned.task_definition_arn
    target, arn = app.deploy()
    aws.calls.reset()

    seen = app.trace(arn, until=30.0)

    assert seen == LIFECYCLES[(strategy, outcome)]
    # One call per look; nothing else was asked.
    assert aws.calls.snapshot() == {"DescribeServiceDeployments": round(30.0 / STEP) + 1}
    record = app.describe(arn)
    service = app.service()
    if outcome == "complete":
        assert (service["taskDefinition"], primary(service)["rolloutState"]) == (
            target,
            "COMPLETED",
        )
        assert len(service["deployments"]) == 1
        assert record["targetServiceRevision"]["runningTaskCount"] == DESIRED
        assert record["finishedAt"] > record["startedAt"]
        assert "rollback" not in record
    elif outcome in ("fail", "alarm"):
        # Rolled back: the previous revision is PRIMARY and COMPLETED again, running its tasks.
        rollback, failed = service["deployments"]
        assert (rollback["taskDefinition"], rollback["rolloutState"]) == (first, "COMPLETED")
        assert (failed["taskDefinition"], failed["rolloutState"]) == (target, "FAILED")
        assert service["taskDefinition"] == first
        assert (
            record["rollback"]["serviceRevisionArn"] == app.listed()[1]["targetServiceRevisionArn"]
        )
        assert record["rollback"]["reason"] == record["statusReason"]
    elif outcome == "rollback_fail":
        # Neither revision cleanly: the failed deployment stays PRIMARY, the old one's tasks on.
        failed, old = service["deployments"]
        assert (failed["status"], failed["rolloutState"]) == ("PRIMARY", "FAILED")
        assert failed["taskDefinition"] == service["taskDefinition"] == target
        assert (old["status"], old["taskDefinition"], old["runningCount"]) == (
            "ACTIVE",
            first,
            DESIRED,
        )
        assert "rollback to the previous revision failed" in record["statusReason"]
    else:
        assert primary(service)["rolloutState"] == "IN_PROGRESS"
        assert "finishedAt" not in record
    if outcome in ("fail", "rollback_fail"):
        breaker = record["deploymentCircuitBreaker"]
        assert breaker == {"status": "TRIGGERED", "failureCount": 3, "threshold": 3}
        assert "circuit breaker" in record["statusReason"]
        [failed] = [d for d in service["deployments"] if d["taskDefinition"] == target]
        assert failed["failedTasks"] == 3
    else:
        assert record["deploymentCircuitBreaker"]["failureCount"] == 0


def test_the_deployments_list_follows_the_record(web: App) -> None:
    """While the record bakes, the deployment is still IN_PROGRESS; COMPLETED with SUCCESSFUL."""
    web.scenario(Scenario("complete", after=AFTER, bake=BAKE))
    target, arn = web.deploy()
    start = web.clock.now
    for at, status, rollout_state in [
        (11.5, "IN_PROGRESS", "IN_PROGRESS"),
        (15.5, "IN_PROGRESS", "IN_PROGRESS"),
        (16.0, "SUCCESSFUL", "COMPLETED"),
    ]:
        web.clock.now = start + at
        service = web.service()  # DescribeServices first: it too moves the rollout along
        assert (web.describe(arn)["status"], primary(service)["rolloutState"]) == (
            status,
            rollout_state,
        )
    assert primary(web.service())["taskDefinition"] == target


def test_alarm_names_come_from_the_service(aws: SandboxAws, clock: Clock) -> None:
    app = make_app(aws, clock, strategy="BLUE_GREEN", alarms=["cpu-high", "5xx-rate"])
    app.scenario(Scenario("alarm", after=AFTER, bake=BAKE))
    _, arn = app.deploy()
    clock.now += AFTER
    baking = app.describe(arn)
    assert (baking["lifecycleStage"], baking["status"]) == ("BAKE_TIME", "IN_PROGRESS")
    assert baking["alarms"] == {"status": "MONITORING", "alarmNames": ["cpu-high", "5xx-rate"]}

    clock.now += BAKE / 2
    record = app.describe(arn)
    assert record["status"] == "ROLLBACK_SUCCESSFUL"  # a rollback of 0 seconds
    assert record["alarms"] == {
        "status": "TRIGGERED",
        "alarmNames": ["cpu-high", "5xx-rate"],
        "triggeredAlarmNames": ["cpu-high", "5xx-rate"],
    }
    assert "cpu-high, 5xx-rate" in record["statusReason"]
    assert record["deploymentConfiguration"]["alarms"]["alarmNames"] == ["cpu-high", "5xx-rate"]
    assert app.service()["taskDefinition"] == app.provisioned.task_definition_arn
    failed = app.service()["deployments"][1]
    assert (failed["rolloutState"], failed["failedTasks"]) == ("FAILED", 0)
    assert "cpu-high" in failed["rolloutStateReason"]


def test_alarm_without_alarms_configured_uses_a_default_name(web: App) -> None:
    web.scenario(Scenario("alarm", after=1.0))
    _, arn = web.deploy()
    web.clock.now += 1.0
    alarms = web.describe(arn)["alarms"]
    assert alarms["triggeredAlarmNames"] == alarms["alarmNames"] == [DEFAULT_ALARM]


@pytest.mark.parametrize(
    ("strategy", "step", "weights"),
    [
        ("LINEAR", 25.0, [None, 0.0, 25.0, 50.0, 75.0, 100.0, 100.0, 100.0]),
        ("CANARY", 10.0, [None, 0.0, 10.0, 100.0, 100.0, 100.0]),
    ],
)
def test_linear_and_canary_shift_traffic_in_steps(
    aws: SandboxAws, clock: Clock, strategy: Strategy, step: float, weights: list[float | None]
) -> None:
    app = make_app(aws, clock, strategy=strategy, step_percent=step, step_bake_minutes=3)
    app.scenario(Scenario("complete", after=AFTER, bake=BAKE))
    _, arn = app.deploy()
    start = clock.now
    seen: list[tuple[str, float | None]] = []
    for i in range(round((AFTER + BAKE) / STEP) + 1):
        clock.now = start + i * STEP
        record = app.describe(arn)
        weight = record["targetServiceRevision"].get("requestedProductionTrafficWeight")
        if not seen or seen[-1] != (record["lifecycleStage"], weight):
            seen.append((record["lifecycleStage"], weight))
    assert [w for _, w in seen] == weights
    stages = [s for s, _ in seen]
    assert stages[:2] == ["SCALE_UP", "TEST_TRAFFIC_SHIFT"]
    assert set(stages[2:-2]) == {"PRODUCTION_TRAFFIC_SHIFT"}
    assert stages[-2:] == ["BAKE_TIME", "CLEAN_UP"]
    assert app.describe(arn)["status"] == "SUCCESSFUL"


def test_a_stuck_deployment_can_be_released(web: App) -> None:
    web.scenario(Scenario("stick", after=AFTER))
    target, arn = web.deploy()
    web.clock.now += 10 * AFTER
    assert (web.describe(arn)["status"], web.describe(arn)["lifecycleStage"]) == (
        "IN_PROGRESS",
        "SCALE_UP",
    )
    web.scenario(Scenario("complete", after=AFTER))
    assert web.describe(arn)["status"] == "SUCCESSFUL"
    assert web.service()["taskDefinition"] == target


def test_a_rollout_back_to_the_last_good_revision_may_do_otherwise(web: App) -> None:
    """`revert`: the new revision sticks, a client's own rollback to the old one completes."""
    web.scenario(Scenario("stick", after=AFTER, revert="complete"))
    first = web.provisioned.task_definition_arn
    _, stuck = web.deploy()
    web.clock.now += 2 * AFTER
    web.ecs.update_service(cluster=web.cluster, service=SERVICE, taskDefinition=first)
    [back] = web.listed(status=["IN_PROGRESS"])
    web.clock.now += AFTER
    assert web.describe(back["serviceDeploymentArn"])["status"] == "SUCCESSFUL"
    assert web.describe(stuck)["status"] == "STOPPED"
    service = web.service()
    assert [(d["taskDefinition"], d["rolloutState"]) for d in service["deployments"]] == [
        (first, "COMPLETED")
    ]
    # Forcing a new deployment of the revision it runs is no rollback: it sticks.
    web.ecs.update_service(cluster=web.cluster, service=SERVICE, forceNewDeployment=True)
    web.clock.now += 2 * AFTER
    assert web.listed()[0]["status"] == "IN_PROGRESS"


def test_a_decided_failure_outlives_a_scenario_change(web: App) -> None:
    web.scenario(Scenario("fail", after=1.0, rollback=ROLLBACK))
    _, arn = web.deploy()
    web.clock.now += 1.0
    assert web.describe(arn)["status"] == "ROLLBACK_IN_PROGRESS"
    web.scenario(Scenario("complete"))
    web.clock.now += ROLLBACK
    assert web.describe(arn)["status"] == "ROLLBACK_SUCCESSFUL"
    assert web.service()["taskDefinition"] == web.provisioned.task_definition_arn


def test_breaker_without_rollback_stops_the_deployment(aws: SandboxAws, web: App) -> None:
    web.ecs.update_service(
        cluster=web.cluster,
        service=SERVICE,
        deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": False}},
    )
    web.scenario(Scenario("fail", after=1.0, rollback=ROLLBACK))
    target, arn = web.deploy()
    web.clock.now += 1.0
    record = web.describe(arn)
    assert record["status"] == "STOPPED"
    assert record["deploymentCircuitBreaker"]["status"] == "TRIGGERED"
    assert "rollback" not in record
    assert primary(web.service())["rolloutState"] == "FAILED"
    assert web.service()["taskDefinition"] == target


# --- stops ---------------------------------------------------------------------------------


def test_stop_abort_leaves_the_service_where_it_is(web: App) -> None:
    web.scenario(Scenario("stick", after=AFTER, rollback=ROLLBACK))
    target, arn = web.deploy()
    web.clock.now += 3.0
    assert web.stop(arn) == arn  # ABORT unless told otherwise

    seen = web.trace(arn, since=3.0, until=10.0)

    assert seen == [
        (3.0, "STOP_REQUESTED", "RECONCILE_SERVICE"),
        (5.0, "STOPPED", "RECONCILE_SERVICE"),
    ]
    record = web.describe(arn)
    assert record["stoppedAt"] == record["finishedAt"]
    assert record["statusReason"] == "Stopped on request (StopServiceDeployment, ABORT)."
    assert "rollback" not in record
    service = web.service()
    assert service["taskDefinition"] == target
    new, old = service["deployments"]
    assert (new["status"], new["rolloutState"]) == ("PRIMARY", "FAILED")
    assert (old["status"], old["runningCount"]) == ("ACTIVE", DESIRED)

    with pytest.raises(ClientError) as raised:
        web.stop(arn, "ABORT")
    assert raised.value.response["Error"]["Code"] == "ConflictException"


def test_stop_with_rollback_puts_the_previous_revision_back(web: App) -> None:
    web.scenario(Scenario("stick", after=AFTER, rollback=ROLLBACK))
    _, arn = web.deploy()
    web.clock.now += 7.0
    web.stop(arn, "ROLLBACK")

    seen = web.trace(arn, since=7.0, until=12.0)

    assert seen == [
        (7.0, "ROLLBACK_REQUESTED", "SCALE_UP"),
        (8.0, "ROLLBACK_IN_PROGRESS", "SCALE_UP"),
        (9.0, "ROLLBACK_SUCCESSFUL", "SCALE_UP"),
    ]
    record = web.describe(arn)
    assert "ROLLBACK" in record["rollback"]["reason"]
    service = web.service()
    assert service["taskDefinition"] == web.provisioned.task_definition_arn
    assert primary(service)["rolloutState"] == "COMPLETED"


def test_stopping_a_rollback_lets_it_go_on(web: App) -> None:
    web.scenario(Scenario("fail", after=1.0, rollback=ROLLBACK))
    _, arn = web.deploy()
    web.clock.now += 1.5
    web.stop(arn, "ABORT")
    assert web.describe(arn)["status"] == "ROLLBACK_IN_PROGRESS"
    web.clock.now += ROLLBACK
    assert web.describe(arn)["status"] == "ROLLBACK_SUCCESSFUL"


def test_stop_of_an_unknown_deployment(web: App) -> None:
    [created] = web.listed()
    with pytest.raises(ClientError) as raised:
        web.stop(created["serviceDeploymentArn"] + "x")
    assert raised.value.response["Error"]["Code"] == "ServiceDeploymentNotFoundException"
    with pytest.raises(ClientError) as raised:
        web.stop(created["serviceDeploymentArn"])  # finished long ago
    assert raised.value.response["Error"]["Code"] == "ConflictException"


def test_a_newer_update_stops_the_deployment_in_flight(web: App) -> None:
    web.scenario(Scenario("stick"))
    first_target, first = web.deploy("registry.local/web:v2")
    _, second = web.deploy("registry.local/web:v3")
    old = web.describe(first)
    assert old["status"] == "STOPPED"
    assert second in old["statusReason"]
    new = web.describe(second)
    assert new["status"] == "IN_PROGRESS"
    sources = [s["arn"] for s in new["sourceServiceRevisions"]]
    created = web.listed()[-1]
    assert sources == [created["targetServiceRevisionArn"], old["targetServiceRevision"]["arn"]]
    revisions = web.ecs.describe_service_revisions(serviceRevisionArns=sources)
    assert [r["taskDefinition"] for r in revisions["serviceRevisions"]] == [
        web.provisioned.task_definition_arn,
        first_target,
    ]


# --- listing and describing ------------------------------------------------------------------


def next_second() -> datetime:
    """Wait for the next whole second (botocore sends createdAt filters in whole seconds)."""
    now = time.time()
    time.sleep(math.floor(now) + 1 - now)
    return datetime.fromtimestamp(math.floor(now) + 1, UTC)


def test_list_filters_and_pages_newest_first(web: App) -> None:
    web.scenario(Scenario("stick"))
    [created] = web.listed()
    _, first = web.deploy("registry.local/web:v2")
    mark = next_second()
    _, second = web.deploy("registry.local/web:v3")
    _, third = web.deploy("registry.local/web:v4")
    everything = [third, second, first, created["serviceDeploymentArn"]]

    def arns(**filters: Any) -> list[str]:
        return [d["serviceDeploymentArn"] for d in web.listed(**filters)]

    assert arns() == everything
    assert arns(status=["IN_PROGRESS"]) == [third]
    assert arns(status=["STOPPED"]) == [second, first]
    assert arns(status=["SUCCESSFUL", "IN_PROGRESS"]) == [third, created["serviceDeploymentArn"]]
    assert arns(createdAt={"after": mark}) == [third, second]
    assert arns(createdAt={"before": mark}) == [first, created["serviceDeploymentArn"]]
    later = mark + timedelta(hours=1)
    assert arns(createdAt={"after": mark, "before": later}) == [third, second]
    assert arns(createdAt={"after": later}) == []

    paged: list[str] = []
    request: dict[str, Any] = {"maxResults": 3}
    while True:
        answer = web.ecs.list_service_deployments(cluster=web.cluster, service=SERVICE, **request)
        assert len(answer["serviceDeployments"]) <= 3
        paged += [d["serviceDeploymentArn"] for d in answer["serviceDeployments"]]
        if "nextToken" not in answer:
            break
        request["nextToken"] = answer["nextToken"]
    assert paged == everything

    with pytest.raises(ClientError) as raised:
        web.listed(nextToken="not-a-token")
    assert raised.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as raised:
        web.ecs.list_service_deployments(cluster=web.cluster, service="nope")
    assert raised.value.response["Error"]["Code"] == "ServiceNotFoundException"


def test_describe_answers_failures_for_unknown_arns_and_takes_twenty(web: App) -> None:
    [created] = web.listed()
    known = created["serviceDeploymentArn"]
    elsewhere = known.replace(f"/{web.cluster}/", "/no-such-cluster/")
    answer = web.ecs.describe_service_deployments(
        serviceDeploymentArns=[known, elsewhere, "not-an-arn"]
    )
    assert [d["serviceDeploymentArn"] for d in answer["serviceDeployments"]] == [known]
    assert answer["failures"] == [
        {"arn": elsewhere, "reason": "MISSING"},
        {"arn": "not-an-arn", "reason": "MISSING"},
    ]
    with pytest.raises(ClientError) as raised:
        web.ecs.describe_service_deployments(serviceDeploymentArns=[known] * 21)
    assert raised.value.response["Error"]["Code"] == "InvalidParameterException"


# --- what services keep ----------------------------------------------------------------------


def test_services_keep_their_deployment_settings(aws: SandboxAws, clock: Clock) -> None:
    app = make_app(
        aws,
        clock,
        strategy="LINEAR",
        bake_minutes=5,
        alarms=["errors"],
        controller="ECS",
        step_percent=20.0,
        step_bake_minutes=2,
    )
    service = app.service()
    config = service["deploymentConfiguration"]
    assert config["strategy"] == "LINEAR"
    assert config["bakeTimeInMinutes"] == 5
    assert config["alarms"] == {"alarmNames": ["errors"], "enable": True, "rollback": True}
    assert config["linearConfiguration"] == {"stepPercent": 20.0, "stepBakeTimeInMinutes": 2}
    assert config["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert service["deploymentController"] == {"type": "ECS"}

    # UpdateService changes the fields it names and keeps the others.
    app.ecs.update_service(
        cluster=app.cluster, service=SERVICE, deploymentConfiguration={"bakeTimeInMinutes": 1}
    )
    config = app.service()["deploymentConfiguration"]
    assert (config["strategy"], config["bakeTimeInMinutes"]) == ("LINEAR", 1)


@pytest.mark.parametrize("controller", ["CODE_DEPLOY", "EXTERNAL"])
def test_other_deployment_controllers_keep_no_service_deployments(
    aws: SandboxAws, clock: Clock, controller: Controller
) -> None:
    app = make_app(aws, clock, controller=controller, strategy="BLUE_GREEN", bake_minutes=10)
    service = app.service()
    assert service["deploymentController"] == {"type": controller}
    assert service["deploymentConfiguration"]["strategy"] == "BLUE_GREEN"
    assert app.listed() == []
    target = app.new_revision("registry.local/web:v2")
    answer = app.ecs.update_service(cluster=app.cluster, service=SERVICE, taskDefinition=target)
    assert app.listed() == []
    assert "currentServiceDeployment" not in answer["service"]
    assert app.service()["taskDefinition"] == target
    assert "currentServiceDeployment" not in app.service()


def test_scenario_rejects_negative_times() -> None:
    with pytest.raises(ValueError, match="negative"):
        Scenario(bake=-1)
    with pytest.raises(ValueError, match="negative"):
        Scenario(rollback=-1)
    with pytest.raises(ValueError, match="outcome"):
        Scenario("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outcome"):
        Scenario(revert="explode")  # type: ignore[arg-type]


# --- PAUSE lifecycle hooks ----------------------------------------------------------------


def paused_app(aws: SandboxAws, clock: Clock, **timeout: Any) -> App:
    """BLUE_GREEN, a PAUSE hook after the test traffic shift (at 8 virtual seconds: the
    three stages before BAKE_TIME share AFTER)."""
    hook: dict[str, Any] = {"targetType": "PAUSE", "lifecycleStages": ["POST_TEST_TRAFFIC_SHIFT"]}
    if timeout:
        hook["timeoutConfiguration"] = timeout
    app = make_app(aws, clock, strategy="BLUE_GREEN", lifecycle_hooks=[hook])
    app.scenario(Scenario("complete", after=AFTER, bake=BAKE, rollback=ROLLBACK))
    return app


def hook_of(record: dict[str, Any]) -> dict[str, Any]:
    [hook] = record["lifecycleHookDetails"]
    return dict(hook)


def test_a_pause_hook_holds_the_deployment_until_it_is_continued(
    aws: SandboxAws, clock: Clock
) -> None:
    app = paused_app(aws, clock)
    _, arn = app.deploy()
    seen = app.trace(arn, until=30.0)
    assert seen == [
        (0.0, "IN_PROGRESS", "SCALE_UP"),
        (4.0, "IN_PROGRESS", "TEST_TRAFFIC_SHIFT"),
        (8.0, "IN_PROGRESS", "POST_TEST_TRAFFIC_SHIFT"),
    ]
    record = app.describe(arn)
    hook = hook_of(record)
    assert (hook["targetType"], hook["status"]) == ("PAUSE", "AWAITING_ACTION")
    assert record["targetServiceRevision"]["requestedProductionTrafficWeight"] == 0.0
    assert primary(app.service())["rolloutState"] == "IN_PROGRESS"

    app.ecs.continue_service_deployment(
        serviceDeploymentArn=arn, hookId=hook["hookId"], action="CONTINUE"
    )
    # It goes on where it stopped, 22 s later: production traffic, the bake, done.
    seen = app.trace(arn, since=30.0, until=40.0)
    assert seen == [
        (30.0, "IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT"),
        (34.0, "IN_PROGRESS", "BAKE_TIME"),
        (38.0, "SUCCESSFUL", "CLEAN_UP"),
    ]
    assert "lifecycleHookDetails" not in app.describe(arn)
    assert primary(app.service())["rolloutState"] == "COMPLETED"


def test_a_pause_hook_continued_with_rollback_puts_the_previous_revision_back(
    aws: SandboxAws, clock: Clock
) -> None:
    app = paused_app(aws, clock)
    _, arn = app.deploy()
    clock.now += 10.0
    hook = hook_of(app.describe(arn))
    app.ecs.continue_service_deployment(
        serviceDeploymentArn=arn, hookId=hook["hookId"], action="ROLLBACK"
    )
    assert app.describe(arn)["status"] == "ROLLBACK_REQUESTED"
    clock.now += ROLLBACK
    assert app.describe(arn)["status"] == "ROLLBACK_SUCCESSFUL"
    assert app.service()["taskDefinition"] == app.provisioned.task_definition_arn


def test_a_pause_hook_past_its_timeout_takes_its_action(aws: SandboxAws, clock: Clock) -> None:
    app = paused_app(aws, clock, timeoutInMinutes=1, action="ROLLBACK")
    _, arn = app.deploy()
    clock.now += 9.0
    hook = hook_of(app.describe(arn))
    assert hook["timeoutAction"] == "ROLLBACK"
    assert hook["expiresAt"] > app.describe(arn)["createdAt"]
    clock.now += 60.0
    assert app.describe(arn)["status"] in ("ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS")
    clock.now += ROLLBACK
    assert app.describe(arn)["status"] == "ROLLBACK_SUCCESSFUL"


def test_continue_names_the_hook_it_is_paused_at(aws: SandboxAws, clock: Clock) -> None:
    app = paused_app(aws, clock)
    _, arn = app.deploy()
    with pytest.raises(ClientError) as raised:  # not paused yet
        app.ecs.continue_service_deployment(serviceDeploymentArn=arn, hookId="nope")
    assert raised.value.response["Error"]["Code"] == "ConflictException"
    clock.now += 9.0
    with pytest.raises(ClientError) as raised:
        app.ecs.continue_service_deployment(serviceDeploymentArn=arn, hookId="nope")
    assert raised.value.response["Error"]["Code"] == "ConflictException"
    hook = hook_of(app.describe(arn))
    with pytest.raises(ClientError) as raised:
        app.ecs.continue_service_deployment(
            serviceDeploymentArn=arn,
            hookId=hook["hookId"],
            action="SIDEWAYS",  # type: ignore[arg-type]
        )
    assert raised.value.response["Error"]["Code"] in (
        "InvalidParameterException",
        "ValidationError",
    )
    assert app.describe(arn)["status"] == "IN_PROGRESS"
