"""The approval gate on the fakes: a release waits after it is pushed and registered, each
later pass finds it waiting without a flicker of another phase or a second registration,
and the votes the API adds let it out or hold it."""

from __future__ import annotations

from dataclasses import replace

from structlog.testing import capture_logs

from reconciler.app.stages.pipeline import Next, run_pass
from reconciler.decisions.approval import Vote
from reconciler.decisions.model import Phase, utcnow
from tests.support.passes import Pass, a_pass


def waiting() -> Pass:
    return a_pass(approval={"required": 1, "expire_after": "1h"})


async def test_a_waiting_release_stays_awaiting_approval_across_passes() -> None:
    run = waiting()
    assert await run_pass(run.session, woken=True) is Next.WAIT
    assert run.status.phase is Phase.AWAITING_APPROVAL
    assert len(run.ecs.registered) == 1 and run.ecs.updates == []
    with capture_logs() as logged:
        for _ in range(3):
            assert await run_pass(run.session, woken=True) is Next.WAIT
    changes = [e for e in logged if e["event"] == "phase_changed"]
    assert changes == [], changes  # never Deploying for a moment while it waits
    assert run.status.phase is Phase.AWAITING_APPROVAL
    assert len(run.ecs.registered) == 1 and run.ecs.updates == []


async def test_an_approval_lets_the_release_out_and_a_rejection_holds_it() -> None:
    run = waiting()
    await run_pass(run.session, woken=True)
    request = run.memory.approval
    assert request is not None
    run.memory.approval = replace(request, approvals=(Vote(by="alice", at=utcnow()),))
    assert await run_pass(run.session, woken=True) is Next.WAIT
    assert run.status.phase is Phase.IN_SYNC
    assert run.ecs.updates == run.ecs.registered  # the registration it waited with

    rejected = waiting()
    await run_pass(rejected.session, woken=True)
    request = rejected.memory.approval
    assert request is not None
    rejected.memory.approval = replace(request, rejected=Vote(by="bob", at=utcnow(), comment="no"))
    await run_pass(rejected.session, woken=True)
    assert rejected.status.phase is Phase.FAILED
    assert rejected.status.last_error == "rejected by bob: no"
    assert rejected.ecs.updates == []
