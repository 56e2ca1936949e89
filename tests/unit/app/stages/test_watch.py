"""Watch: a rollout followed to its verdict (ECS's service deployment record where there is
one, else the deployments list), within rollout_timeout plus the bake, ended early by a newer
revision, and never failed by a passing AWS error."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta

import pytest

from reconciler.app.stages.watch import Watched, watch
from reconciler.decisions.model import (
    Attempt,
    Phase,
    RolloutSettings,
    ServiceDeployment,
    ServiceState,
    utcnow,
)
from reconciler.errors import AwsRejected, AwsUnavailable, GitUnavailable
from tests.support.passes import NEWER, REVISION, Pass, a_pass

STUCK = 10**9  # DescribeServices calls before the fake rollout completes: never


def with_bake(run: Pass, seconds: float) -> None:
    assert run.ecs.state is not None
    run.ecs.state = dataclasses.replace(
        run.ecs.state, rollout=RolloutSettings(strategy="BLUE_GREEN", bake_seconds=seconds)
    )


async def test_a_completed_deployment_is_a_success_and_the_view_says_so() -> None:
    run = a_pass()
    rollout = await run.roll_out(settle_after=2)
    assert await watch(run.ctx, rollout) == Watched(succeeded=True)
    view = run.status.rollout
    assert view is not None
    assert (view.kind, view.deployment, view.task_definition) == (
        "deploy",
        rollout.deployment_id,
        rollout.task_definition,
    )
    assert view.status == "COMPLETED" and view.finished_at is not None
    assert run.status.phase is Phase.DEPLOYING  # InSync is the pipeline's to say
    assert run.timed("reconciler_rollout_seconds") == 1


@pytest.mark.parametrize("ours", [True, False], ids=["the attempt's", "another attempt"])
async def test_the_service_deployment_record_found_is_kept_with_the_attempt(ours: bool) -> None:
    """So a restart reads the same record; an attempt of another task definition is left."""
    run = a_pass()
    rollout = await run.roll_out()
    run.ecs.service_deployments[rollout.task_definition] = ServiceDeployment(
        "arn:sd/1", "SUCCESSFUL"
    )
    attempt = Attempt(
        revision=REVISION,
        task_definition=rollout.task_definition if ours else "td:other",
        previous=rollout.previous,
        config_fingerprint=run.app.fingerprint(),
    )
    run.memory.attempt = attempt
    assert await watch(run.ctx, rollout) == Watched(succeeded=True)
    assert run.status.rollout is not None
    assert run.status.rollout.service_deployment == "arn:sd/1"
    kept = run.written.attempt if ours else run.memory.attempt
    assert kept is not None
    assert kept.service_deployment == ("arn:sd/1" if ours else None)


RECORDS = {
    "ECS rolled back on an alarm": (
        ServiceDeployment("arn:sd/1", "ROLLBACK_SUCCESSFUL", alarms_triggered=("web-5xx",)),
        Watched(
            reason="ECS rolled the deployment back: alarms web-5xx went off",
            rolled_back_by_ecs=True,
        ),
    ),
    "ECS could not roll back": (
        ServiceDeployment("arn:sd/1", "ROLLBACK_FAILED", failed_tasks=3),
        Watched(
            reason="ECS could not roll the deployment back: 3 tasks failed (circuit breaker)",
            rollback_failed=True,
        ),
    ),
}


@pytest.mark.parametrize(("record", "ended"), RECORDS.values(), ids=RECORDS.keys())
async def test_the_service_deployment_record_is_the_verdict(
    record: ServiceDeployment, ended: Watched
) -> None:
    """Even while the deployments list says COMPLETED."""
    run = a_pass()
    rollout = await run.roll_out()
    run.ecs.service_deployments[rollout.task_definition] = record
    assert await watch(run.ctx, rollout) == ended
    view = run.status.rollout
    assert view is not None and view.status == record.status
    assert view.alarms_triggered == record.alarms_triggered
    assert view.failed_tasks == record.failed_tasks


ALARMED = ServiceDeployment("arn:sd/7", "ROLLBACK_SUCCESSFUL", alarms_triggered=("web-5xx",))
ROLLED_BACK = Watched(
    reason="ECS rolled the deployment back: alarms web-5xx went off", rolled_back_by_ecs=True
)


async def test_the_record_update_service_named_is_watched_without_looking_for_it() -> None:
    """UpdateService's answer names the service deployment it started: no
    ListServiceDeployments, and the record is the verdict from the first poll."""
    run = a_pass()
    run.ecs.next_record = ALARMED
    rollout = await run.roll_out()
    assert rollout.service_deployment == ALARMED.arn
    run.ecs.fail_next("find_service_deployment", AssertionError("looked for a named record"))
    assert await watch(run.ctx, rollout) == ROLLED_BACK
    assert run.status.rollout is not None
    assert run.status.rollout.service_deployment == ALARMED.arn


async def test_where_update_service_names_no_record_the_watch_looks_for_it() -> None:
    """An older API, a region or a sandbox whose answer has no currentServiceDeployment."""
    run = a_pass()
    run.ecs.next_record, run.ecs.names_records = ALARMED, False
    rollout = await run.roll_out()
    assert rollout.service_deployment is None
    assert await watch(run.ctx, rollout) == ROLLED_BACK


async def test_a_named_record_that_cannot_be_described_is_looked_for_instead() -> None:
    """An ARN taken on trust that DescribeServiceDeployments refuses is dropped, not the
    records altogether: the watch looks the record up as if none had been named."""
    run = a_pass()
    run.ecs.next_record = ALARMED
    rollout = await run.roll_out()
    run.ecs.fail_next(
        "describe_service_deployment", AwsRejected("ServiceDeploymentNotFoundException")
    )
    assert await watch(run.ctx, rollout) == ROLLED_BACK
    assert run.session.service_deployments_usable is True


TIMEOUTS = {
    "no bake": (0.0, "rollout did not complete within 0.1s"),
    "a bake extends the deadline": (
        0.1,
        "rollout did not complete within 0.2s (rollout_timeout 0.1s + bake 0.1s)",
    ),
}


@pytest.mark.parametrize(("bake", "reason"), TIMEOUTS.values(), ids=TIMEOUTS.keys())
async def test_a_rollout_that_does_not_complete_in_time_fails(bake: float, reason: str) -> None:
    run = a_pass(rollout_timeout=0.1)
    with_bake(run, bake)
    rollout = await run.roll_out(settle_after=STUCK)
    began = time.monotonic()
    assert await watch(run.ctx, rollout) == Watched(reason=reason)
    assert time.monotonic() - began >= 0.1 + bake
    assert run.status.rollout is not None and run.status.rollout.finished_at is not None


async def test_a_watch_picked_up_after_a_restart_keeps_the_deploys_deadline() -> None:
    run = a_pass(rollout_timeout=5)
    rollout = await run.roll_out(settle_after=STUCK)
    rollout = dataclasses.replace(rollout, since=utcnow() - timedelta(minutes=10))
    began = time.monotonic()
    assert await watch(run.ctx, rollout) == Watched(reason="rollout did not complete within 5s")
    assert time.monotonic() - began < 2


async def test_a_rollout_another_host_started_is_timed_from_this_watch() -> None:
    """That host's wall clock may be minutes ahead: its stamp would fail the rollout at once."""
    run = a_pass(rollout_timeout=0.3)
    rollout = await run.roll_out(settle_after=STUCK)
    rollout = dataclasses.replace(rollout, since=utcnow() - timedelta(minutes=10), timed_here=False)
    began = time.monotonic()
    watched = await watch(run.ctx, rollout)
    assert watched == Watched(reason="rollout did not complete within 0.3s")
    assert time.monotonic() - began >= 0.3


async def test_an_access_denied_service_deployments_api_falls_back_to_the_list() -> None:
    """Said once per app: the session remembers, and later watches do not ask again."""
    run = a_pass()
    rollout = await run.roll_out()
    run.ecs.fail_next("find_service_deployment", AwsRejected("AccessDeniedException"))
    assert await watch(run.ctx, rollout) == Watched(succeeded=True)
    assert run.session.service_deployments_usable is False

    later = await run.roll_out()
    run.ecs.fail_next("find_service_deployment", AssertionError("not to be asked again"))
    assert await watch(run.ctx, later) == Watched(succeeded=True)


async def test_losing_sight_of_ecs_for_a_while_is_not_a_failure() -> None:
    run = a_pass()
    rollout = await run.roll_out(settle_after=1)
    run.ecs.fail_next("describe_service", AwsUnavailable("throttled"), AwsUnavailable("5xx"))
    run.ecs.fail_next("find_service_deployment", AwsUnavailable("throttled"))
    assert await watch(run.ctx, rollout) == Watched(succeeded=True)
    assert run.session.service_deployments_usable is True


async def test_a_newer_revision_ends_the_watch_of_a_deploy() -> None:
    run = a_pass(head=NEWER)
    rollout = await run.roll_out(settle_after=STUCK)
    run.session.nudges.bump()
    assert await watch(run.ctx, rollout) == Watched(superseded=True)
    assert run.results() == [(REVISION, "superseded")]


async def test_the_watch_of_a_rollback_is_never_superseded() -> None:
    run = a_pass(head=NEWER, rollout_timeout=0.1)
    rollout = await run.roll_out(settle_after=STUCK)
    run.session.nudges.bump()
    ended = await watch(run.ctx, rollout, kind="rollback", supersedable=False)
    assert ended == Watched(reason="rollout did not complete within 0.1s")
    assert run.git.resolves == 0
    assert run.status.rollout is not None and run.status.rollout.kind == "rollback"
    assert run.status.phase is not Phase.DEPLOYING


async def test_git_failing_during_a_watch_only_means_no_newer_revision_is_known() -> None:
    run = a_pass()
    rollout = await run.roll_out(settle_after=3)
    run.session.nudges.bump()
    run.git.fail_next("resolve", GitUnavailable("ls-remote: connection refused"))
    assert await watch(run.ctx, rollout) == Watched(succeeded=True)
    assert run.git.resolves == 1
    assert run.results() == []


def counting_describes(run: Pass) -> list[str]:
    described: list[str] = []
    real = run.ecs.describe_service

    async def describe(cluster: str, service: str, *, max_age: float = 0.0) -> ServiceState:
        described.append(service)
        return await real(cluster, service, max_age=max_age)

    run.ecs.describe_service = describe  # type: ignore[method-assign]
    return described


async def test_a_rollout_just_started_is_first_looked_at_on_the_shared_grid() -> None:
    """Not at once: ECS cannot have finished it in the instant since, and apps that started
    theirs a moment apart share that first DescribeServices. A nudge ends the wait as it
    ends any other; a rollout found under way is looked at at once."""
    run = a_pass()
    run.session.timings = dataclasses.replace(run.session.timings, rollout_polls=(3600.0,))
    rollout = await run.roll_out()
    run.ecs.service_deployments[rollout.task_definition] = ServiceDeployment(
        "arn:sd/1", "SUCCESSFUL"
    )
    described = counting_describes(run)
    watching = asyncio.create_task(watch(run.ctx, rollout))
    for _ in range(20):
        await asyncio.sleep(0)
    assert described == [] and not watching.done()
    run.session.nudges.bump()  # a push: the wait ends, the newer revision is looked for
    assert await asyncio.wait_for(watching, 5) == Watched(succeeded=True)
    assert described == ["web"]

    found = dataclasses.replace(rollout, since=utcnow() - timedelta(hours=2))
    assert await asyncio.wait_for(watch(run.ctx, found), 5) == Watched(succeeded=True)
    assert described == ["web", "web"]
