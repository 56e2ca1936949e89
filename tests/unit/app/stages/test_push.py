"""Push: the built image to the registry, with fresh registry credentials."""

from __future__ import annotations

import pytest

from reconciler.app.stages.push import push
from reconciler.decisions.model import Phase
from reconciler.errors import RegistryUnavailable
from tests.support.passes import a_pass

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
