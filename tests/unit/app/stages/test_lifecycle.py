"""The gates at a PAUSE lifecycle hook, on the fakes: with a hook on the service, the
approval is asked for while ECS holds the deployment at the hook (not before the service
update), and the answer continues it or sends it back."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from reconciler.app.stages.pipeline import Next, run_pass
from reconciler.decisions.approval import Vote
from reconciler.decisions.model import Phase, RolloutSettings, ServiceDeployment, utcnow
from tests.support.passes import Pass, a_pass
from tests.support.probes import eventually
from tests.unit.app.stages.test_analysis import check

RECORD = "arn:aws:ecs:us-east-1:123456789012:service-deployment/cluster/web/r1"


def paused_at_a_hook() -> Pass:
    """An app with approval whose service pauses its deployments after the test traffic."""
    run = a_pass(approval={"required": 1, "expire_after": "1h"})
    assert run.ecs.state is not None
    pauses = RolloutSettings(strategy="BLUE_GREEN", pause_stages=("POST_TEST_TRAFFIC_SHIFT",))
    run.ecs.state = replace(run.ecs.state, rollout=pauses)
    run.ecs.next_record = ServiceDeployment(
        arn=RECORD,
        status="IN_PROGRESS",
        lifecycle_stage="POST_TEST_TRAFFIC_SHIFT",
        paused_hook="hook-1",
    )
    return run


async def test_the_approval_is_asked_at_the_hook_and_an_approval_continues_it() -> None:
    run = paused_at_a_hook()
    passing = asyncio.create_task(run_pass(run.session, woken=True))
    await eventually(
        lambda: run.status.phase is Phase.AWAITING_APPROVAL, what="waiting at the hook"
    )
    # The service was updated: the new revision has its test traffic, nothing more.
    assert len(run.ecs.updates) == 1 and run.ecs.continued == []
    request = run.memory.approval
    assert request is not None
    run.memory.approval = replace(request, approvals=(Vote(by="alice", at=utcnow()),))
    assert await asyncio.wait_for(passing, 10) is Next.WAIT
    assert run.ecs.continued == [(RECORD, "hook-1", "CONTINUE")]
    assert run.status.phase is Phase.IN_SYNC
    assert run.status.history[0].result.value == "deployed"


async def test_a_rejection_at_the_hook_sends_the_deployment_back() -> None:
    run = paused_at_a_hook()
    passing = asyncio.create_task(run_pass(run.session, woken=True))
    await eventually(
        lambda: run.status.phase is Phase.AWAITING_APPROVAL, what="waiting at the hook"
    )
    request = run.memory.approval
    assert request is not None
    run.memory.approval = replace(request, rejected=Vote(by="bob", at=utcnow(), comment="no"))
    assert await asyncio.wait_for(passing, 10) is Next.WAIT
    assert run.ecs.continued == [(RECORD, "hook-1", "ROLLBACK")]
    assert run.status.phase is Phase.FAILED
    assert run.status.last_error is not None
    assert "rejected by bob: no (sent back at its lifecycle hook)" in run.status.last_error
    assert len(run.ecs.updates) == 1  # ECS rolled it back: no UpdateService of ours


async def test_without_a_hook_the_approval_comes_before_the_update() -> None:
    run = a_pass(approval={"required": 1, "expire_after": "1h"})
    assert await run_pass(run.session, woken=True) is Next.WAIT
    assert run.status.phase is Phase.AWAITING_APPROVAL
    assert run.ecs.updates == []


async def test_a_failed_check_at_the_hook_sends_the_deployment_back_before_production() -> None:
    """No approval, one check: measured while the deployment waits at the hook; its second
    value above max sends it back, before any production traffic."""
    run = paused_at_a_hook()
    checks = (check(),)
    run.session.app = run.app.model_copy(update={"approval": None, "analysis": checks})
    run.sources.answer("5xx", 0.1, 3.5)
    assert await asyncio.wait_for(run_pass(run.session, woken=True), 10) is Next.WAIT
    assert run.ecs.continued == [(RECORD, "hook-1", "ROLLBACK")]
    assert run.status.phase is Phase.FAILED
    assert run.status.last_error is not None
    assert "analysis 5xx failed" in run.status.last_error
    assert "(sent back at its lifecycle hook)" in run.status.last_error


async def test_passing_checks_at_the_hook_continue_it() -> None:
    run = paused_at_a_hook()
    run.session.app = run.app.model_copy(update={"approval": None, "analysis": (check(),)})
    run.sources.answer("5xx", 0.1, 0.2, 0.3)
    assert await asyncio.wait_for(run_pass(run.session, woken=True), 10) is Next.WAIT
    assert run.ecs.continued == [(RECORD, "hook-1", "CONTINUE")]
    assert run.status.phase is Phase.IN_SYNC


async def test_a_pause_hook_on_a_rolling_service_moves_nothing_to_the_hook() -> None:
    """ECS runs lifecycle hooks for BLUE_GREEN, LINEAR and CANARY only: on a ROLLING service
    a configured hook never stops a deployment, so the approval comes before the update."""
    run = paused_at_a_hook()
    assert run.ecs.state is not None
    rolling = RolloutSettings(strategy="ROLLING", pause_stages=("POST_SCALE_UP",))
    run.ecs.state = replace(run.ecs.state, rollout=rolling)
    assert await run_pass(run.session, woken=True) is Next.WAIT
    assert run.status.phase is Phase.AWAITING_APPROVAL
    assert run.ecs.updates == []
