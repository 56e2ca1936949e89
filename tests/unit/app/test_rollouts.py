"""Rollouts judged right, on one app's loop with fakes at every seam: service deployment
records, bake time, the daemon's own rollback watched to its end, controllers refused."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from reconciler.decisions.model import Phase, RolloutSettings, ServiceDeployment
from tests.support.fakes import FakeWorld
from tests.support.probes import eventually

A = "a" * 40
STUCK = 10**9  # DescribeServices calls before a fake rollout completes: never


@asynccontextmanager
async def running(world: FakeWorld) -> AsyncIterator[FakeWorld]:
    task = asyncio.create_task(world.loop.run())
    try:
        yield world
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def rollbacks(world: FakeWorld, outcome: str) -> float:
    value = world.metrics.registry.get_sample_value(
        "reconciler_rollbacks_total", {"app": "web", "outcome": outcome}
    )
    return value or 0.0


def with_rollout(world: FakeWorld, settings: RolloutSettings) -> None:
    assert world.ecs.state is not None
    world.ecs.state = dataclasses.replace(world.ecs.state, rollout=settings)


async def test_a_service_another_controller_drives_is_refused_with_no_write(
    tmp_path: Path,
) -> None:
    world = FakeWorld.create(tmp_path, head=A)
    with_rollout(world, RolloutSettings(controller="CODE_DEPLOY"))
    async with running(world):
        await eventually(lambda: world.count("stalled") >= 2, what="refused passes")
    assert world.status.last_error == (
        "service web uses the CODE_DEPLOY deployment controller; "
        "only ECS-controlled services can be deployed"
    )
    assert world.docker.builds == [] and world.ecs.registered == [] and world.ecs.updates == []


async def test_a_rollback_by_the_daemon_that_fails_too_is_rollback_failed(
    tmp_path: Path,
) -> None:
    """Stuck past the timeout, rolled back, and the rollback sticks as well: the loud
    outcome, its metric, and the hold."""
    world = FakeWorld.create(tmp_path, head=A, rollout_timeout=0.3)
    world.ecs.settle_after = STUCK
    async with running(world):
        await eventually(lambda: world.count("rollback_failed") == 1, what="rollback_failed")
    assert [h.result.value for h in world.status.history] == ["rollback_failed"]
    assert "the rollback to" in (world.status.last_error or "")
    assert rollbacks(world, "rollback_failed") == 1
    assert world.status.phase is Phase.FAILED
    assert world.status.rollout is not None and world.status.rollout.kind == "rollback"
    assert len(world.ecs.updates) == 2  # the deploy and the rollback, nothing more


async def test_a_rollback_by_the_daemon_is_watched_until_it_succeeded(tmp_path: Path) -> None:
    world = FakeWorld.create(tmp_path, head=A, rollout_timeout=0.3)
    world.ecs.settle_after = STUCK
    stable = world.ecs.state.task_definition if world.ecs.state else ""

    def rollback_completes(task_definition: str) -> None:
        if task_definition == stable:
            world.ecs.settle_after = 0

    world.ecs.during_update = rollback_completes
    async with running(world):
        await eventually(lambda: world.count("rolled_back") == 1, what="rolled_back")
    assert rollbacks(world, "rolled_back") == 1
    assert world.status.rollout is not None
    assert world.status.rollout.finished_at is not None


async def test_the_service_deployment_record_decides_and_its_bake_is_waited_for(
    tmp_path: Path,
) -> None:
    """The deployments list says COMPLETED, the record says it still bakes: not yet a
    success; a bake longer than rollout_timeout does not time out."""
    world = FakeWorld.create(tmp_path, head=A, rollout_timeout=0.2)
    with_rollout(world, RolloutSettings(strategy="BLUE_GREEN", bake_seconds=60.0))
    record = ServiceDeployment("arn:sd/1", "IN_PROGRESS", lifecycle_stage="BAKE_TIME")

    def recorded(task_definition: str) -> None:
        world.ecs.service_deployments[task_definition] = record

    world.ecs.during_update = recorded
    async with running(world):
        await eventually(
            lambda: world.status.rollout is not None and world.status.rollout.stage == "BAKE_TIME",
            what="baking",
        )
        await asyncio.sleep(0.5)  # past rollout_timeout, within the bake
        assert world.status.phase is Phase.DEPLOYING
        (arn,) = world.ecs.service_deployments
        world.ecs.service_deployments[arn] = dataclasses.replace(record, status="SUCCESSFUL")
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="in sync")
    assert world.status.rollout is not None
    assert world.status.rollout.strategy == "BLUE_GREEN"
    assert world.status.rollout.service_deployment == "arn:sd/1"
    assert [h.result.value for h in world.status.history] == ["deployed"]


async def test_an_alarm_rollback_is_never_deployed(tmp_path: Path) -> None:
    world = FakeWorld.create(tmp_path, head=A)
    alarm = ServiceDeployment("arn:sd/1", "ROLLBACK_SUCCESSFUL", alarms_triggered=("web-5xx",))
    world.ecs.during_update = lambda td: world.ecs.service_deployments.__setitem__(td, alarm)
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.FAILED, what="Failed")
    assert [h.result.value for h in world.status.history] == ["rolled_back"]
    assert "web-5xx" in (world.status.last_error or "")


async def test_an_access_denied_service_deployments_api_falls_back_and_says_so_once(
    tmp_path: Path,
) -> None:
    from structlog.testing import capture_logs

    from reconciler.errors import AwsRejected

    world = FakeWorld.create(tmp_path, head=A)
    world.ecs.fail_next("find_service_deployment", AwsRejected("AccessDeniedException"))
    with capture_logs() as logs:
        async with running(world):
            await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="in sync")
    said = [e for e in logs if e["event"] == "service_deployments_unavailable"]
    assert len(said) == 1
