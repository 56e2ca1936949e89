"""SIGKILL at the worst moments, then a restart: the daemon converges with exactly one
UpdateService for the revision, and a rollout found in flight is awaited, not started again.

The daemon runs as `reconciler run --config PATH` in a subprocess, as under systemd; the
sandbox AWS stays in the test process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.sandbox.scenario import Scenario
from tests.support.daemon_process import DaemonProcess
from tests.support.probes import eventually, images_of_family, slow_dockerfile
from tests.support.world import World

pytestmark = [pytest.mark.slow]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    """Daemon processes of the test; whatever still runs at the end is killed."""
    started: list[DaemonProcess] = []
    yield started
    for process in started:
        process.kill()


async def start(world: World, spawn: list[DaemonProcess], run: int) -> DaemonProcess:
    process = DaemonProcess(world.write_config(), world.root / f"run{run}.log")
    spawn.append(process)
    await process.start()
    return process


def in_sync(world: World, revision: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s["phase"] == "InSync" and s["live"]["image"] == world.image(revision)


def events(process: DaemonProcess) -> list[str]:
    return [str(e.get("event")) for e in process.events()]


async def test_sigkill_mid_build_then_restart_deploys_once(
    world: World, base_image: str, spawn: list[DaemonProcess]
) -> None:
    """Killed while building: nothing reached ECS; the next start builds and deploys once."""
    head = world.repo.commit({"Dockerfile": slow_dockerfile(base_image, 4)}, "slow build")
    first = await start(world, spawn, 1)
    await first.wait_for(world.name, lambda s: s["phase"] == "Building", what="the build")
    first.kill()
    assert world.updates() == 0
    assert images_of_family(world) == [world.image("bootstrap")]

    second = await start(world, spawn, 2)
    status = await second.wait_for(world.name, in_sync(world, head), what="in sync")
    assert second.stop() == 0
    assert world.aws.rollouts.update_service_count(world.cluster, world.name) == 1
    assert [(h["revision"], h["result"]) for h in status["history"]] == [(head, "deployed")]


async def test_sigkill_between_registration_and_update_service(
    world: World, spawn: list[DaemonProcess]
) -> None:
    """Killed after RegisterTaskDefinition, before any UpdateService got through: one update."""
    registered = world.aws.calls.count("RegisterTaskDefinition")
    attempts = world.aws.calls.count("UpdateService")
    world.aws.faults.inject("UpdateService", times=1000, status=500, code="ServerException")
    first = await start(world, spawn, 1)
    await eventually(
        lambda: (
            world.aws.calls.count("RegisterTaskDefinition") > registered
            and world.aws.calls.count("UpdateService") >= attempts + 2
        ),
        what="a registration and a refused UpdateService",
    )
    first.kill()
    assert world.updates() == 0
    assert world.image(world.first_commit) in images_of_family(world)
    assert world.live_image() == world.image("bootstrap")

    world.aws.faults.clear()
    second = await start(world, spawn, 2)
    await second.wait_for(world.name, in_sync(world, world.first_commit), what="in sync")
    assert second.stop() == 0
    assert world.aws.rollouts.update_service_count(world.cluster, world.name) == 1
    assert "build_started" not in events(second)  # the pushed image was found and reused


async def test_sigkill_mid_rollout_then_restart_awaits_the_same_rollout(
    world: World, spawn: list[DaemonProcess]
) -> None:
    """Killed while ECS rolls out: the restart waits for that rollout and starts no other."""
    world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("stick"))
    first = await start(world, spawn, 1)
    await first.wait_for(world.name, lambda s: s["phase"] == "Deploying", what="the rollout")
    await eventually(lambda: world.updates() == 1, what="the UpdateService")
    first.kill()
    deployments = world.service()["deployments"]
    assert deployments[0]["rolloutState"] == "IN_PROGRESS"

    second = await start(world, spawn, 2)
    await eventually(lambda: "rollout_in_flight_found" in events(second), what="the rollout found")
    await second.wait_for(world.name, lambda s: s["phase"] == "Deploying", what="awaiting it")
    world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("complete"))
    status = await second.wait_for(world.name, in_sync(world, world.first_commit), what="done")
    assert second.stop() == 0
    assert world.aws.rollouts.update_service_count(world.cluster, world.name) == 1
    assert world.service()["deployments"][0]["id"] == deployments[0]["id"]
    assert "service_updated" not in events(second)
    assert "task_definition_registered" not in events(second)
    assert status["history"][0]["result"] == "deployed"
