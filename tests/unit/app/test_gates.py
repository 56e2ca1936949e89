"""The pipeline's gates on one app's loop (fakes at every seam): a test before the push, a
pre-deploy task before the service update, extra tags after the rollout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from reconciler.decisions.model import Phase, TestRun
from tests.support.fakes import FakeWorld
from tests.support.probes import eventually

A = "a" * 40
B = "b" * 40


@asynccontextmanager
async def running(world: FakeWorld) -> AsyncIterator[FakeWorld]:
    task = asyncio.create_task(world.loop.run())
    try:
        yield world
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def results(world: FakeWorld) -> list[tuple[str, str]]:
    return [(h.revision, h.result.value) for h in world.status.history]


async def test_a_failed_test_pushes_nothing_and_holds_until_a_passing_commit(
    tmp_path: Path,
) -> None:
    world = FakeWorld.create(tmp_path, head=A, test={"command": ["npm", "test"]})
    world.docker.test_result = TestRun(exit_code=1, timed_out=False, tail=("1 failing",))
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.FAILED, what="Failed")
        assert world.docker.pushes == []
        assert world.ecs.registered == []
        assert results(world) == [(A, "test_failed")]
        assert "npm test exited 1" in (world.status.last_error or "")
        assert "1 failing" in (world.status.last_error or "")
        assert world.count("test_failed") == 1

        world.loop.nudge()  # a nudge does not retry a failed test
        await eventually(lambda: world.count("held") >= 1, what="held pass")
        assert len(world.docker.runs) == 1

        world.docker.test_result = TestRun(exit_code=0, timed_out=False, tail=())
        world.git.head = B
        world.loop.nudge()
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="B in sync")
    assert world.docker.pushes == [world.image(B)]
    assert world.live_image() == world.image(B)


async def test_a_test_that_times_out_says_so(tmp_path: Path) -> None:
    world = FakeWorld.create(tmp_path, head=A, test={"command": ["sleep", "9"], "timeout": 1})
    world.docker.test_result = TestRun(exit_code=None, timed_out=True, tail=("zzz",))
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.FAILED, what="Failed")
    assert "test timed out after 1s" in (world.status.last_error or "")
    assert world.docker.pushes == []


async def test_a_failed_pre_deploy_task_leaves_the_service_untouched(tmp_path: Path) -> None:
    world = FakeWorld.create(tmp_path, head=A, pre_deploy={"command": ["./manage.py", "migrate"]})
    world.ecs.task_exit_code = 1
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.FAILED, what="Failed")
        assert world.ecs.updates == []
        assert len(world.ecs.tasks) == 1
        assert results(world) == [(A, "pre_deploy_failed")]
        assert "app exited 1" in (world.status.last_error or "")
        world.loop.nudge()
        await eventually(lambda: world.count("held") >= 1, what="held pass")
        assert len(world.ecs.tasks) == 1  # never run twice for the revision


async def test_a_pre_deploy_task_that_never_started_names_the_reason(tmp_path: Path) -> None:
    world = FakeWorld.create(tmp_path, head=A, pre_deploy={"command": ["migrate"]})
    world.ecs.task_exit_code = None
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.FAILED, what="Failed")
    assert "stopped before app ran" in (world.status.last_error or "")
    assert world.ecs.updates == []


async def test_a_passing_pre_deploy_task_runs_once_then_the_service_is_updated(
    tmp_path: Path,
) -> None:
    world = FakeWorld.create(tmp_path, head=A, pre_deploy={"command": ["migrate"]})
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="in sync")
    assert len(world.ecs.tasks) == 1
    assert len(world.ecs.updates) == 1
    assert A in world.store.load("web").pre_deploy_done


async def test_a_pre_deploy_container_the_task_definition_lacks_is_named(tmp_path: Path) -> None:
    world = FakeWorld.create(
        tmp_path, head=A, pre_deploy={"command": ["migrate"], "container": "worker"}
    )
    async with running(world):
        await eventually(
            lambda: "pre_deploy.container 'worker'" in (world.status.last_error or ""),
            what="the error",
        )
    assert world.ecs.tasks == {} and world.ecs.updates == []


async def test_extra_tags_move_after_the_rollout_succeeded(tmp_path: Path) -> None:
    world = FakeWorld.create(tmp_path, head=A, extra_tags=["latest", "prod"])
    async with running(world):
        await eventually(lambda: world.registry.tags.get("latest") == A, what="latest moved")
    assert world.registry.tags == {"latest": A, "prod": A}
    assert world.store.load("web").tagged == A
    assert all(world.ecs.image_of(arn).endswith(A) for arn in world.ecs.registered)


async def test_extra_tags_that_cannot_move_never_fail_the_deploy_and_move_later(
    tmp_path: Path,
) -> None:
    from reconciler.errors import RegistryUnavailable

    world = FakeWorld.create(tmp_path, head=A, extra_tags=["latest"])
    world.registry.fail_next("retag", RegistryUnavailable("registry down"))
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="in sync")
        assert results(world) == [(A, "deployed")]
        assert "latest" not in world.registry.tags
        world.loop.nudge()
        await eventually(lambda: world.registry.tags.get("latest") == A, what="moved later")
