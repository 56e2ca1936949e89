"""Observe: what the planner needs, read from ECS, the registry and the app's memory, and
never a write."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.app.stages.observe import desired_of, managed_images, observe
from reconciler.app.state import AppMemory
from reconciler.decisions.model import Attempt, Hold, Observation
from reconciler.errors import ManifestError
from tests.support.fakes import REGISTRY
from tests.support.passes import NEWER, REVISION, Pass, a_pass, app_config

DEFINITION = {
    "family": "web",
    "containerDefinitions": [
        {"name": "app", "image": f"{REGISTRY}/web:old"},
        {"name": "worker", "image": f"{REGISTRY}/web:old"},
        {"name": "sidecar", "image": "public.test/sidecar:1"},
    ],
}

MANAGED = {
    "by repository: every container of the app's repository": (
        {},
        {"app": f"{REGISTRY}/web:old", "worker": f"{REGISTRY}/web:old"},
    ),
    "by name: only the named containers, whatever their image": (
        {"containers": ["app", "sidecar"]},
        {"app": f"{REGISTRY}/web:old", "sidecar": "public.test/sidecar:1"},
    ),
}


@pytest.mark.parametrize(("keys", "want"), MANAGED.values(), ids=MANAGED.keys())
def test_managed_images(keys: dict[str, Any], want: dict[str, str]) -> None:
    assert managed_images(app_config(**keys), DEFINITION) == want


REFUSED = {
    "a named container is missing": ({"containers": ["app", "cron"]}, "no container named cron"),
    "no container uses the repository": ({"ecr_repository": "api"}, "repository 'api'"),
}


@pytest.mark.parametrize(("keys", "says"), REFUSED.values(), ids=REFUSED.keys())
def test_a_task_definition_the_app_cannot_update_is_refused(
    keys: dict[str, Any], says: str
) -> None:
    with pytest.raises(ManifestError, match=says):
        managed_images(app_config(**keys), DEFINITION)


async def observed(
    run: Pass, memory: AppMemory | None = None, *, unwritable: str | None = None
) -> Observation:
    desired = await desired_of(run.app, run.ctx.io, revision=run.ctx.revision)
    return await observe(
        run.app, run.ctx.io, desired=desired, memory=memory or run.memory, unwritable=unwritable
    )


async def test_the_desired_image_is_the_revision_in_the_apps_repository() -> None:
    run = a_pass(ecr_repository="team/web", containers=["app"])
    desired = await desired_of(run.app, run.ctx.io, revision=REVISION)
    assert str(desired.image) == f"{REGISTRY}/team/web:{REVISION}"


@pytest.mark.parametrize(
    ("pushed", "in_registry"), [(True, True), (False, False)], ids=["pushed", "not pushed"]
)
async def test_an_image_not_live_is_looked_up_in_the_registry(
    pushed: bool, in_registry: bool
) -> None:
    run = a_pass()
    if pushed:
        await run.docker.push(run.image(), auth=None)
    observation = await observed(run)
    assert observation.image_in_registry is in_registry
    assert observation.live.images == {"app": f"{REGISTRY}/web:bootstrap"}
    assert observation.live.task_definition == run.live_task_definition()


async def test_an_image_already_live_is_not_asked_of_the_registry() -> None:
    run = a_pass()
    arn = await run.ecs.register_task_definition(
        {"family": "web", "containerDefinitions": [{"name": "app", "image": run.image()}]}, []
    )
    await run.ecs.update_service(cluster="cluster", service="web", task_definition=arn)
    run.registry.fail_next("has_tag", AssertionError("the registry is not to be asked"))
    observation = await observed(run)
    assert observation.image_in_registry is None
    assert observation.live.runs(observation.desired.image)


async def test_the_observation_carries_the_apps_memory_and_config() -> None:
    """The hold, the attempt, the failed builds of this revision only, damage, an unwritable
    state and suspension: what the planner judges besides AWS."""
    run = a_pass(suspended=True)
    hold = Hold(revision=REVISION, reason="circuit breaker", config_fingerprint="f")
    attempt = Attempt(
        revision=REVISION, task_definition="td:2", previous="td:1", config_fingerprint="f"
    )
    memory = AppMemory(
        hold=hold,
        attempt=attempt,
        build_failures={REVISION: 2, NEWER: 1},
        damaged="state file damaged",
    )
    observation = await observed(run, memory, unwritable="disk full")
    assert observation.hold == hold
    assert observation.attempt == attempt
    assert observation.build_failures == 2
    assert observation.state_damaged == "state file damaged"
    assert observation.state_unwritable == "disk full"
    assert observation.suspended is True
    assert observation.config_fingerprint == run.app.fingerprint()


async def test_observing_writes_nothing() -> None:
    run = a_pass()
    before = run.ecs.definitions.copy()
    await observed(run)
    assert run.ecs.registered == [] and run.ecs.updates == [] and run.ecs.definitions == before
    assert run.docker.pushes == [] and run.registry.tags == {}
    assert run.store.saves == 0


async def test_a_task_definition_it_cannot_update_stops_the_observation() -> None:
    run = a_pass(containers=["cron"])
    with pytest.raises(ManifestError, match="cron"):
        await observed(run)
