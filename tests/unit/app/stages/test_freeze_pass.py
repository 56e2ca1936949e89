"""Whole passes of a frozen app, on the fakes: a new release does not start (no build, no
registration, no update), a rollback that is owed still goes, an admin's override lets one
release through."""

from __future__ import annotations

from datetime import timedelta

from reconciler.app.stages.pipeline import Next, run_pass
from reconciler.decisions.freeze import FreezeWindow, parse_cron
from reconciler.decisions.model import Hold, Phase
from tests.support.passes import REVISION, Pass, a_pass

ALWAYS = FreezeWindow(
    apps=("web",),
    cron=parse_cron("* * * * *"),  # a window starts every minute and lasts an hour
    duration=timedelta(hours=1),
    timezone="UTC",
    reason="quarter close",
)


def frozen() -> Pass:
    run = a_pass()
    run.session.freezes = lambda: (ALWAYS,)
    return run


async def test_a_frozen_app_starts_no_release_and_wakes_at_the_end() -> None:
    run = frozen()
    assert await run_pass(run.session, woken=True) is Next.WAIT
    assert run.status.phase is Phase.FROZEN
    assert (run.docker.builds, run.ecs.registered, run.ecs.updates) == ([], [], [])
    assert run.status.frozen is not None and run.status.frozen.reason == "quarter close"
    assert run.session.wake_at == run.status.frozen.until


async def test_a_rollback_owed_goes_out_during_a_freeze() -> None:
    run = frozen()
    stable = run.live_task_definition()
    await run.roll_out()
    run.memory.hold = Hold(REVISION, "failed", run.app.fingerprint(), rollback_to=stable)
    await run_pass(run.session, woken=True)
    assert run.ecs.updates[-1] == stable
    hold = run.written.hold
    assert hold is not None and hold.rollback_to is None


async def test_an_override_lets_one_release_through() -> None:
    run = frozen()
    run.session.override_freeze = "hotfix for INC-42"
    assert await run_pass(run.session, woken=True) is Next.WAIT
    assert run.status.phase is Phase.IN_SYNC
    assert len(run.ecs.updates) == 1
    assert run.session.override_freeze is None  # used up
