"""Push: the built image to the registry, with fresh registry credentials; and the test
stage's image kept as the app's cache image, which never fails a deploy."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from reconciler.app.stages.build import cache_image, stage_image
from reconciler.app.stages.push import keep_as_cache, push
from reconciler.decisions.model import Phase
from reconciler.errors import RegistryUnavailable, StalledError
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


async def test_a_test_stage_is_kept_as_the_apps_cache_image() -> None:
    """Under one tag per test target in the app's repository, so any host finds it."""
    run = with_test_stage()
    local = stage_image("web", REVISION)
    with capture_logs() as logged:
        await keep_as_cache(run.ctx, local)
    cache = f"{REGISTRY}/web:cache-test"
    assert cache_image(run.ctx) == cache
    assert run.docker.tags == {cache: local}
    assert run.docker.pushes == [cache]
    assert [e["image"] for e in logged if e["event"] == "cache_pushed"] == [cache]


async def test_a_cache_image_the_registry_refuses_is_said_and_nothing_fails() -> None:
    run = with_test_stage()
    cache = f"{REGISTRY}/web:cache-test"
    run.docker.fail_next(f"push {cache}", StalledError("tag cache-test is immutable"))
    with capture_logs() as logged:
        await keep_as_cache(run.ctx, stage_image("web", REVISION))
    assert run.docker.pushes == []
    [warning] = [e for e in logged if e["event"] == "cache_push_failed"]
    assert warning["log_level"] == "warning" and "immutable" in warning["error"]


async def test_no_cache_image_without_a_test_target() -> None:
    plain = a_pass(test={"command": ["npm", "test"]})
    plain.observe()
    assert cache_image(plain.ctx) is None
    await keep_as_cache(plain.ctx, stage_image("web", REVISION))
    assert plain.docker.pushes == [] and plain.docker.tags == {}
