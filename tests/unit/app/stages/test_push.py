"""Push: the built image to the registry, with fresh registry credentials; beside it the
test stage's image as the app's cache image, which never fails a deploy."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from reconciler.app.stages.build import TestStage, cache_image, stage_image
from reconciler.app.stages.push import push
from reconciler.decisions.model import Phase
from reconciler.errors import BuildFailed, RegistryUnavailable, StalledError
from tests.support.fakes import REGISTRY
from tests.support.passes import REVISION, Pass, a_pass

PUSH_SECONDS = "reconciler_push_seconds"


async def test_the_desired_image_is_pushed_and_then_found_in_the_registry() -> None:
    run = a_pass()
    run.observe()
    await push(run.ctx)
    assert run.docker.pushes == [run.image()]
    assert run.status.phase is Phase.PUSHING
    assert run.timed(PUSH_SECONDS) == 1
    assert await run.registry.has_tag(
        registry="registry.test", repository="web", tag=run.ctx.revision, auth=None
    )


async def test_a_push_the_registry_refuses_leaves_nothing_pushed() -> None:
    run = a_pass()
    run.observe()
    run.docker.fail_next("push", RegistryUnavailable("blob upload interrupted"))
    with pytest.raises(RegistryUnavailable):
        await push(run.ctx)
    assert run.docker.pushes == []
    assert run.timed(PUSH_SECONDS) == 0


def with_test_stage() -> Pass:
    run = a_pass(test={"command": ["npm", "test"], "target": "test"})
    run.observe()
    return run


async def test_the_test_stage_goes_to_the_registry_as_the_apps_cache_image() -> None:
    """Under one tag per test target in the app's repository, so any host finds it."""
    run = with_test_stage()
    local = stage_image("web", REVISION)
    with capture_logs() as logged:
        await push(run.ctx, TestStage(image=local))
    cache = f"{REGISTRY}/web:cache-test"
    assert cache_image(run.ctx) == cache
    assert run.docker.tags == {cache: local}
    assert sorted(run.docker.pushes) == sorted([run.image(), cache])
    assert [e["image"] for e in logged if e["event"] == "cache_pushed"] == [cache]
    assert run.timed(PUSH_SECONDS) == 1


async def test_a_cache_image_the_registry_refuses_is_said_and_the_deploy_goes_on() -> None:
    run = with_test_stage()
    cache = f"{REGISTRY}/web:cache-test"
    run.docker.fail_next(f"push {cache}", StalledError("tag cache-test is immutable"))
    with capture_logs() as logged:
        await push(run.ctx, TestStage(image=stage_image("web", REVISION)))
    assert run.docker.pushes == [run.image()]
    [warning] = [e for e in logged if e["event"] == "cache_push_failed"]
    assert warning["log_level"] == "warning" and "immutable" in warning["error"]


async def test_no_cache_image_without_a_test_stage_that_built() -> None:
    run = with_test_stage()
    failed = TestStage(image=stage_image("web", REVISION), failure=BuildFailed("no"))
    await push(run.ctx, failed)
    plain = a_pass(test={"command": ["npm", "test"]})
    plain.observe()
    await push(plain.ctx)
    assert cache_image(plain.ctx) is None
    assert (run.docker.pushes, plain.docker.pushes) == ([run.image()], [plain.image()])
    assert run.docker.tags == plain.docker.tags == {}


async def test_a_failed_push_of_the_image_stops_the_cache_push() -> None:
    run = with_test_stage()
    run.docker.fail_next(f"push {run.image()}", RegistryUnavailable("blob upload interrupted"))
    with pytest.raises(RegistryUnavailable):
        await push(run.ctx, TestStage(image=stage_image("web", REVISION)))
    assert run.docker.pushes == []
