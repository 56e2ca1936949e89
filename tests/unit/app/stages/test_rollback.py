"""Roll back: a failed rollout held, written before the service is put back on what ran
before, and that rollback watched; the outcome says how it ended."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from reconciler.app.stages.rollback import hold_failed, roll_back
from reconciler.app.stages.watch import Watched
from reconciler.decisions.model import Attempt, Hold, Phase, Result, ServiceDeployment
from reconciler.errors import AwsUnavailable
from tests.support.passes import REVISION, Pass, a_pass

STUCK = 10**9  # DescribeServices calls before the fake rollout completes: never
FAILED = "deployment ecs-svc/1 failed: circuit breaker"


def rollbacks(run: Pass, outcome: str) -> float:
    return run.sample("reconciler_rollbacks_total", app="web", outcome=outcome)


def owing(run: Pass, task_definition: str) -> Hold:
    hold = Hold(
        revision=REVISION,
        reason=FAILED,
        config_fingerprint=run.app.fingerprint(),
        rollback_to=task_definition,
    )
    run.memory.hold = hold
    return hold


@pytest.mark.parametrize("there", [False, True], ids=["elsewhere", "already there"])
async def test_roll_back_points_the_service_back_and_pays_the_debt(there: bool) -> None:
    run = a_pass()
    stable = run.live_task_definition()
    if not there:
        await run.roll_out()
    owing(run, stable)
    updates = list(run.ecs.updates)
    deployment = await roll_back(run.ctx, stable)
    assert (deployment is None) is there
    assert run.ecs.updates == updates + ([] if there else [stable])
    assert run.sample("reconciler_deploys_total", app="web", kind="rollback") == (0 if there else 1)
    assert run.live_task_definition() == stable
    hold = run.written.hold
    assert hold is not None and hold.rollback_to is None
    assert run.status.phase is Phase.FAILED
    assert run.status.live_task_definition == stable


async def test_a_rollback_aws_refuses_stays_owed() -> None:
    run = a_pass()
    stable = run.live_task_definition()
    await run.roll_out()
    hold = owing(run, stable)
    run.ecs.fail_next("update_service", AwsUnavailable("UpdateService: throttled"))
    with pytest.raises(AwsUnavailable):
        await roll_back(run.ctx, stable)
    assert run.memory.hold == hold  # the next pass plans the rollback again
    assert run.status.phase is Phase.FAILED


@dataclass
class Case:
    ended: Watched
    rollback: bool = True
    has_previous: bool = True
    result: Result = Result.ROLLED_BACK
    daemon_rolls_back: bool = True


CASES = {
    "the daemon rolls back what ECS left": Case(Watched(reason=FAILED)),
    "rollback off: held, nothing undone": Case(
        Watched(reason=FAILED), rollback=False, result=Result.FAILED, daemon_rolls_back=False
    ),
    "ECS rolled back itself": Case(
        Watched(reason=FAILED, rolled_back_by_ecs=True), daemon_rolls_back=False
    ),
    "ECS could not roll back, rollback off": Case(
        Watched(reason=FAILED, rollback_failed=True),
        rollback=False,
        result=Result.ROLLBACK_FAILED,
        daemon_rolls_back=False,
    ),
    "ECS could not roll back: the daemon does": Case(Watched(reason=FAILED, rollback_failed=True)),
    "nothing ran before: nothing to go back to": Case(
        Watched(reason=FAILED), has_previous=False, result=Result.FAILED, daemon_rolls_back=False
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_hold_failed(case: Case) -> None:
    run = a_pass(rollback=case.rollback)
    stable = run.live_task_definition()
    rollout = await run.roll_out()
    run.memory.attempt = Attempt(
        revision=REVISION,
        task_definition=rollout.task_definition,
        previous=stable,
        config_fingerprint=run.app.fingerprint(),
    )
    previous = stable if case.has_previous else None
    assert await hold_failed(run.ctx, case.ended, previous=previous) is case.result
    expected = (
        [rollout.task_definition, stable] if case.daemon_rolls_back else [rollout.task_definition]
    )
    assert run.ecs.updates == expected
    hold = run.written.hold
    assert hold is not None
    assert (hold.revision, hold.reason, hold.rollback_to) == (REVISION, FAILED, None)
    assert hold.config_fingerprint == run.app.fingerprint()
    assert run.written.attempt is None
    assert run.results() == [(REVISION, case.result.value)]
    assert run.status.phase is Phase.FAILED and run.status.last_error == FAILED
    assert run.count(case.result.value) == 1
    counted = case.result is not Result.FAILED
    assert rollbacks(run, case.result.value) == (1 if counted else 0)


async def test_the_hold_is_written_before_the_rollback_goes_out() -> None:
    """A daemon that dies in between finds the hold, owing the rollback: never a redeploy."""
    run = a_pass()
    stable = run.live_task_definition()
    await run.roll_out()
    seen: list[Hold | None] = []
    run.ecs.during_update = lambda _: seen.append(run.written.hold)
    await hold_failed(run.ctx, Watched(reason=FAILED), previous=stable)
    assert len(seen) == 1 and seen[0] is not None
    assert seen[0].rollback_to == stable


async def test_a_hold_that_cannot_be_written_does_not_stop_the_rollback() -> None:
    run = a_pass()
    stable = run.live_task_definition()
    await run.roll_out()
    run.store.refusing = "cannot write state file: read-only file system"
    assert await hold_failed(run.ctx, Watched(reason=FAILED), previous=stable) is Result.ROLLED_BACK
    assert run.ecs.updates[-1] == stable
    assert run.memory.hold is not None and run.memory.hold.revision == REVISION
    assert run.written.hold is None


async def test_a_rollback_that_does_not_complete_either_is_rollback_failed() -> None:
    run = a_pass(rollout_timeout=0.1)
    stable = run.live_task_definition()
    await run.roll_out()
    run.ecs.settle_after = STUCK  # the rollback's rollout sticks too
    ended = Watched(reason=FAILED)
    assert await hold_failed(run.ctx, ended, previous=stable) is Result.ROLLBACK_FAILED
    reason = f"{FAILED}; the rollback to {stable} failed too: rollout did not complete within 0.1s"
    assert run.status.last_error == reason
    assert run.status.history[0].error == reason
    assert run.status.rollout is not None and run.status.rollout.kind == "rollback"
    assert rollbacks(run, "rollback_failed") == 1


async def test_the_rollback_is_judged_by_the_record_update_service_named() -> None:
    """The record of the daemon's own rollback is read without looking for it; a rollback
    that ECS stopped is rollback_failed, whatever the deployments list says."""
    run = a_pass()
    stable = run.live_task_definition()
    await run.roll_out()
    run.ecs.next_record = ServiceDeployment("arn:sd/back", "STOPPED", status_reason="stopped")
    run.ecs.fail_next("find_service_deployment", AssertionError("looked for a named record"))
    assert await hold_failed(run.ctx, Watched(reason=FAILED), previous=stable) is (
        Result.ROLLBACK_FAILED
    )
    assert run.status.rollout is not None
    assert (run.status.rollout.kind, run.status.rollout.service_deployment) == (
        "rollback",
        "arn:sd/back",
    )


async def test_a_rollback_that_cannot_be_sent_is_still_owed_and_the_failure_said() -> None:
    run = a_pass()
    stable = run.live_task_definition()
    await run.roll_out()
    run.ecs.fail_next("update_service", AwsUnavailable("UpdateService: throttled"))
    with pytest.raises(AwsUnavailable):
        await hold_failed(run.ctx, Watched(reason=FAILED), previous=stable)
    hold = run.written.hold
    assert hold is not None and hold.rollback_to == stable
    # Nothing was rolled back yet: the outcome is a failure, never `rolled_back`.
    assert run.results() == [(REVISION, Result.FAILED.value)]
    assert run.status.phase is Phase.FAILED and run.status.last_error == FAILED
    assert rollbacks(run, "rolled_back") == 0
