"""Modern ECS rollouts judged right by the daemon, end to end on the sandbox: service
deployment records for ROLLING and BLUE_GREEN, alarms during a bake, ROLLBACK_FAILED, a
deployment stopped by someone else, bakes longer than rollout_timeout, restarts during a
bake, throttling, and the controllers the daemon refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import boto3
import pytest

from reconciler.sandbox.aws import SandboxAws
from reconciler.sandbox.provision import Controller, Strategy
from reconciler.sandbox.scenario import Scenario
from tests.support.daemon_process import DaemonProcess
from tests.support.probes import eventually, reconcile_count
from tests.support.world import RunningDaemon, World

pytestmark = [pytest.mark.slow]


STRATEGIES: list[Strategy] = ["ROLLING", "BLUE_GREEN"]


@pytest.fixture(params=STRATEGIES)
def strategy_world(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    aws: SandboxAws,
    registry: str,
    docker_engine: str,
) -> World:
    aws.faults.clear()
    strategy: Strategy = request.param
    return World.create(
        tmp_path, aws, registry, strategy=strategy, bake_minutes=1, alarms=["web-5xx"]
    )


async def second_commit(world: World, daemon: RunningDaemon, scenario: Scenario) -> str:
    await daemon.wait_phase("InSync", revision=world.first_commit)
    world.aws.rollouts.set_scenario(world.cluster, world.name, scenario)
    second = world.repo.commit({"app.txt": "version 2\n"}, "second")
    await daemon.github_push()
    return second


def rollbacks(daemon: RunningDaemon, outcome: str) -> float:
    value = daemon.daemon.metrics.registry.get_sample_value(
        "reconciler_rollbacks_total", {"app": daemon.world.name, "outcome": outcome}
    )
    return value or 0.0


async def test_a_deploy_is_judged_by_its_service_deployment(strategy_world: World) -> None:
    """The bake (longer than rollout_timeout here) is waited for, not a timeout; the status
    shows the record, its strategy and its stages."""
    world = strategy_world
    world.app_overrides["rollout_timeout"] = "2s"
    async with world.daemon() as daemon:
        second = await second_commit(world, daemon, Scenario("complete", after=0.3, bake=3.0))
        baking = await daemon.wait_for(
            lambda s: (s["rollout"] or {}).get("stage") == "BAKE_TIME", what="baking"
        )
        assert baking["phase"] == "Deploying"
        status = await daemon.wait_phase("InSync", revision=second)
    rollout = status["rollout"]
    assert rollout["strategy"] == world_strategy(world)
    assert rollout["status"] == "SUCCESSFUL"
    assert rollout["service_deployment"].startswith("arn:aws:ecs:")
    assert rollout["finished_at"] is not None
    assert status["history"][0]["result"] == "deployed"
    assert world.aws.calls.count("DescribeServiceDeployments") > 0


def world_strategy(world: World) -> str:
    return str(world.service()["deploymentConfiguration"].get("strategy", "ROLLING"))


async def test_an_alarm_during_the_bake_is_a_rollback_never_a_success(
    strategy_world: World,
) -> None:
    world = strategy_world
    async with world.daemon() as daemon:
        second = await second_commit(world, daemon, Scenario("alarm", after=0.3, bake=1.0))
        status = await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and s["desired"]["revision"] == second, what="Failed"
        )
        assert "web-5xx" in status["last_error"]
        assert status["rollout"]["alarms_triggered"] == ["web-5xx"]
        assert status["history"][0]["result"] == "rolled_back"
        assert rollbacks(daemon, "rolled_back") == 1
    assert world.updates() == 2  # ECS rolled back itself: no second rollback by the daemon


async def test_rollback_failed_is_loud(world: World) -> None:
    world.app_overrides["rollback"] = False
    async with world.daemon() as daemon:
        second = await second_commit(world, daemon, Scenario("rollback_fail", after=0.3))
        status = await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and s["desired"]["revision"] == second, what="Failed"
        )
        assert status["history"][0]["result"] == "rollback_failed"
        assert "could not roll the deployment back" in status["last_error"]
        assert rollbacks(daemon, "rollback_failed") == 1
        assert reconcile_count(daemon, "rollback_failed") == 1


@pytest.mark.parametrize(
    ("stop_type", "said", "result"),
    [
        ("ABORT", "the deployment was stopped", "rolled_back"),  # by the daemon's rollback
        ("ROLLBACK", "ECS rolled the deployment back", "rolled_back"),
    ],
)
async def test_a_deployment_stopped_by_someone_else_is_a_failure(
    world: World, stop_type: Literal["ABORT", "ROLLBACK"], said: str, result: str
) -> None:
    async with world.daemon() as daemon:
        second = await second_commit(world, daemon, Scenario("stick"))
        status = await daemon.wait_for(
            lambda s: (
                s["desired"]["revision"] == second
                and (s["rollout"] or {}).get("status") == "IN_PROGRESS"
                and (s["rollout"] or {}).get("service_deployment") is not None
            ),
            what="the record of the second's rollout found",
        )
        ecs = boto3.client("ecs", region_name=world.aws.region, endpoint_url=world.aws.endpoint_url)
        ecs.stop_service_deployment(
            serviceDeploymentArn=status["rollout"]["service_deployment"], stopType=stop_type
        )
        # Whatever puts the service back (ECS, or the daemon's own rollback) completes.
        world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("complete"))
        status = await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and s["history"][0]["revision"] == second,
            what="Failed, and the outcome recorded",
        )
    assert said in status["last_error"], status["last_error"]
    assert status["history"][0]["result"] == result, status["last_error"]


async def test_a_restart_during_the_bake_awaits_the_same_deployment(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    """The service bakes for a minute (as ECS is told), longer than rollout_timeout."""
    aws.faults.clear()
    world = World.create(tmp_path, aws, registry, bake_minutes=1)
    world.app_overrides["rollout_timeout"] = "2s"
    first = DaemonProcess(world.write_config(), tmp_path / "run1.log")
    second = DaemonProcess(world.write_config(), tmp_path / "run2.log")
    try:
        await first.start()
        await first.wait_for(world.name, lambda s: s["phase"] == "InSync", what="first deploy")
        world.aws.rollouts.set_scenario(
            world.cluster, world.name, Scenario("complete", after=0.2, bake=4.0)
        )
        revision = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await first.post(f"/apps/{world.name}/sync")
        await first.wait_for(
            world.name,
            lambda s: (s["rollout"] or {}).get("stage") == "BAKE_TIME",
            what="baking",
        )
        first.kill()
        await second.start()
        status = await second.wait_for(
            world.name,
            lambda s: s["phase"] == "InSync" and s["desired"]["revision"] == revision,
            what="in sync after the bake",
        )
    finally:
        first.kill()
        second.kill()
    assert world.updates() == 2
    assert "rollout_in_flight_found" in [e.get("event") for e in second.events()]
    assert status["history"][0]["result"] == "deployed"


async def test_throttled_service_deployment_reads_are_retried_never_a_verdict(
    world: World,
) -> None:
    async with world.daemon() as daemon:
        second = await second_commit(world, daemon, Scenario("complete", after=0.5, bake=0.5))
        world.aws.faults.inject(
            "DescribeServiceDeployments", times=4, status=400, code="ThrottlingException"
        )
        status = await daemon.wait_phase("InSync", revision=second)
    assert status["history"][0]["result"] == "deployed"


async def test_denied_service_deployments_fall_back_to_the_deployments_list(
    world: World,
) -> None:
    """The record UpdateService names cannot be read, nor looked for: the deployments list
    judges the rollouts."""
    for action in ("DescribeServiceDeployments", "ListServiceDeployments"):
        world.aws.faults.inject(
            action,
            times=1000,
            status=400,
            code="AccessDeniedException",
            message=f"User is not authorized to perform: ecs:{action}",
        )
    async with world.daemon() as daemon:
        second = await second_commit(world, daemon, Scenario("complete", after=0.3))
        await daemon.wait_phase("InSync", revision=second)
        third = world.repo.commit({"app.txt": "version 3\n"}, "third")
        await daemon.github_push()
        await daemon.wait_phase("InSync", revision=third)
    world.aws.faults.clear()


@pytest.mark.parametrize("controller", ["CODE_DEPLOY", "EXTERNAL"])
async def test_services_of_other_controllers_are_refused_and_never_written(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str, controller: Controller
) -> None:
    aws.faults.clear()
    world = World.create(tmp_path, aws, registry, controller=controller)
    registered = aws.calls.count("RegisterTaskDefinition")
    async with world.daemon() as daemon:
        status = await daemon.wait_for(
            lambda s: f"uses the {controller} deployment controller" in (s["last_error"] or ""),
            what="refused",
        )
        await eventually(lambda: reconcile_count(daemon, "stalled") >= 2, what="refused again")
    assert status["phase"] != "InSync"
    assert world.updates() == 0
    assert aws.calls.count("RegisterTaskDefinition") == registered


async def test_the_services_own_settings_survive_a_deploy(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    """UpdateService names the task definition only: strategy, bake, alarms, network and
    launch settings stay as the service was configured."""
    aws.faults.clear()
    world = World.create(
        tmp_path, aws, registry, strategy="BLUE_GREEN", bake_minutes=1, alarms=["web-5xx"]
    )
    before = world.service()
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
    after = world.service()
    assert after["taskDefinition"] != before["taskDefinition"]
    for key in ("deploymentConfiguration", "networkConfiguration", "launchType", "loadBalancers"):
        assert after.get(key) == before.get(key), key
    assert after["deploymentConfiguration"]["strategy"] == "BLUE_GREEN"
