"""Register and update: a task definition that changes only the managed images, then
UpdateService, with the attempt written first; a newer revision announced meanwhile stops
either before it writes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from reconciler.app.stages.deploy import (
    Registered,
    register,
    update,
    with_app_tag,
    with_image,
)
from reconciler.decisions.housekeeping import APP_TAG
from reconciler.decisions.model import (
    Attempt,
    Deployment,
    Phase,
    ServiceDeployment,
    ServiceState,
)
from reconciler.errors import AwsRejected, AwsUnavailable, ReconcilerError, StateUnwritable
from tests.support.fakes import REGISTRY
from tests.support.passes import NEWER, REVISION, Pass, a_pass

SIDECAR = "public.test/sidecar:1"


def test_with_image_changes_only_the_managed_containers_of_a_copy() -> None:
    definition: dict[str, Any] = {
        "family": "web",
        "containerDefinitions": [
            {"name": "app", "image": "old", "cpu": 256},
            {"name": "sidecar", "image": SIDECAR},
        ],
    }
    changed = with_image(definition, {"app"}, "new")
    assert changed["containerDefinitions"] == [
        {"name": "app", "image": "new", "cpu": 256},
        {"name": "sidecar", "image": SIDECAR},
    ]
    assert definition["containerDefinitions"][0]["image"] == "old"


def test_with_app_tag_names_the_app_once_and_keeps_the_other_tags() -> None:
    tags = [{"key": "team", "value": "x"}, {"key": APP_TAG, "value": "api"}]
    assert with_app_tag(tags, "web") == [
        {"key": "team", "value": "x"},
        {"key": APP_TAG, "value": "web"},
    ]


def observed(*, head: str = REVISION) -> Pass:
    run = a_pass(head=head)
    run.observe()
    return run


async def test_register_copies_the_live_definition_with_the_desired_image() -> None:
    run = observed()
    live = run.live_task_definition()
    registered = await register(run.ctx)
    assert registered == Registered(arn=run.ecs.registered[0], previous=live)
    assert run.ecs.definitions[registered.arn]["containerDefinitions"] == [
        {"name": "app", "image": run.image()},
        {"name": "sidecar", "image": SIDECAR},
    ]
    assert run.status.phase is Phase.DEPLOYING


async def test_a_retried_register_reuses_the_registration_for_the_same_image() -> None:
    run = observed()
    first = await register(run.ctx)
    again = await register(run.ctx)
    assert again == first
    assert len(run.ecs.registered) == 1

    newer = a_pass(revision=NEWER)
    newer.ctx.session.registration = run.session.registration  # one for another image
    newer.observe()
    registered = await register(newer.ctx)
    assert registered is not None and registered.arn == newer.ecs.registered[0]


async def test_what_to_roll_back_to_is_the_settled_definition_not_one_rolling_out() -> None:
    run = a_pass()
    settled = run.live_task_definition()
    rolling = await run.ecs.register_task_definition(
        {"family": "web", "containerDefinitions": [{"name": "app", "image": f"{REGISTRY}/web:x"}]},
        [],
    )
    run.ecs.state = ServiceState(
        cluster="cluster",
        service="web",
        task_definition=rolling,
        deployments=(
            Deployment("ecs-svc/2", "PRIMARY", rolling, "IN_PROGRESS", 0, 1),
            Deployment("ecs-svc/1", "ACTIVE", settled, "COMPLETED", 1, 1),
        ),
    )
    run.observe()
    registered = await register(run.ctx)
    assert registered is not None and registered.previous == settled


@dataclass
class Nudge:
    nudged: bool
    head: str
    writes: bool
    asks_git: bool


NUDGES = {
    "no nudge: git is not asked again": Nudge(False, NEWER, writes=True, asks_git=False),
    "a nudge, same revision: go on": Nudge(True, REVISION, writes=True, asks_git=True),
    "a nudge, newer revision: stop before any trace": Nudge(True, NEWER, False, True),
}


@pytest.mark.parametrize("case", NUDGES.values(), ids=NUDGES.keys())
async def test_register_asks_git_again_after_a_nudge(case: Nudge) -> None:
    run = observed(head=case.head)
    if case.nudged:
        run.session.nudges.bump()
    registered = await register(run.ctx)
    assert (registered is not None) is case.writes
    assert len(run.ecs.registered) == (1 if case.writes else 0)
    assert run.git.resolves == (1 if case.asks_git else 0)
    assert run.results() == ([] if case.writes else [(REVISION, "superseded")])


@pytest.mark.parametrize("case", NUDGES.values(), ids=NUDGES.keys())
async def test_update_asks_git_again_after_a_nudge(case: Nudge) -> None:
    run = observed(head=case.head)
    registered = await register(run.ctx)
    assert registered is not None
    if case.nudged:
        run.session.nudges.bump()
    started = await update(run.ctx, registered)
    assert (started is not None) is case.writes
    assert run.ecs.updates == ([registered.arn] if case.writes else [])
    assert (run.memory.attempt is not None) is case.writes


async def test_update_writes_the_attempt_and_starts_the_rollout() -> None:
    run = observed()
    registered = await register(run.ctx)
    assert registered is not None
    rollout = await update(run.ctx, registered)
    assert run.ecs.updates == [registered.arn]
    attempt = run.written.attempt
    assert attempt is not None
    assert (attempt.revision, attempt.task_definition, attempt.previous) == (
        REVISION,
        registered.arn,
        registered.previous,
    )
    assert attempt.config_fingerprint == run.app.fingerprint()
    assert attempt.deployment_id == "ecs-svc/1"
    assert rollout is not None
    assert (rollout.deployment_id, rollout.task_definition, rollout.previous) == (
        "ecs-svc/1",
        registered.arn,
        registered.previous,
    )
    assert rollout.since == attempt.at
    assert run.session.registration is None  # used up
    assert run.sample("reconciler_deploys_total", app="web", kind="deploy") == 1


@pytest.mark.parametrize("named", [True, False], ids=["named", "not named"])
async def test_the_record_update_service_names_is_kept_with_the_attempt(named: bool) -> None:
    """So the watch, and a daemon that restarts mid-rollout, read it without looking for it."""
    run = observed()
    run.ecs.next_record, run.ecs.names_records = ServiceDeployment("arn:sd/1", "PENDING"), named
    registered = await register(run.ctx)
    assert registered is not None
    rollout = await update(run.ctx, registered)
    assert rollout is not None and run.written.attempt is not None
    expected = "arn:sd/1" if named else None
    assert rollout.service_deployment == run.written.attempt.service_deployment == expected


async def test_an_attempt_that_cannot_be_written_sends_no_update_service() -> None:
    run = observed()
    earlier = Attempt(
        revision=NEWER, task_definition="td:9", previous="td:8", config_fingerprint="f"
    )
    run.memory.attempt = earlier
    registered = await register(run.ctx)
    assert registered is not None
    run.store.refusing = "cannot write state file: No space left on device"
    with pytest.raises(StateUnwritable, match="not deploying aaaaaaaaaaaa: cannot write"):
        await update(run.ctx, registered)
    assert run.ecs.updates == []
    assert run.memory.attempt == earlier
    assert run.session.registration is not None  # a later pass reuses it


@pytest.mark.parametrize(
    ("error", "kept"),
    [(AwsUnavailable("throttled"), True), (AwsRejected("AccessDenied"), False)],
    ids=["transient: the retry reuses the registration", "refused: it is dropped"],
)
async def test_an_update_service_that_fails_leaves_the_attempt_written(
    error: ReconcilerError, kept: bool
) -> None:
    """UpdateService may have gone out all the same: the attempt stays, without an id."""
    run = observed()
    registered = await register(run.ctx)
    assert registered is not None
    run.ecs.fail_next("update_service", error)
    with pytest.raises(type(error)):
        await update(run.ctx, registered)
    assert (run.session.registration is not None) is kept
    attempt = run.written.attempt
    assert attempt is not None and attempt.task_definition == registered.arn
    assert attempt.deployment_id is None
    assert run.sample("reconciler_deploys_total", app="web", kind="deploy") == 0


async def test_update_waits_while_a_stop_holds_the_critical_section() -> None:
    run = observed()
    registered = await register(run.ctx)
    assert registered is not None
    await run.session.critical.acquire()
    started = asyncio.create_task(update(run.ctx, registered))
    await asyncio.sleep(0.05)
    assert run.ecs.updates == [] and run.memory.attempt is None
    run.session.critical.release()
    assert await asyncio.wait_for(started, 5) is not None
    assert run.ecs.updates == [registered.arn]
