"""The pipeline: which stages one pass runs for what it observed, in which order, and what the
loop is told to do next."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from reconciler.app.stages.pipeline import Next, run_pass
from reconciler.decisions.model import (
    Attempt,
    HistoryEntry,
    Hold,
    Phase,
    Result,
    RolloutSettings,
    ServiceDeployment,
    TestRun,
    utcnow,
)
from reconciler.decisions.plan import MAX_BUILD_ATTEMPTS
from reconciler.errors import GitUnavailable, StalledError
from tests.support.fakes import REGISTRY
from tests.support.passes import NEWER, REVISION, Pass, a_pass

Arrange = Callable[[Pass], Awaitable[None]]


async def nothing(run: Pass) -> None:
    pass


async def already_live(run: Pass) -> None:
    await run.roll_out()


async def already_pushed(run: Pass) -> None:
    await run.docker.push(run.image(), auth=None)


async def held(run: Pass) -> None:
    run.memory.hold = Hold(REVISION, "circuit breaker", run.app.fingerprint())


async def failing_test(run: Pass) -> None:
    run.docker.test_result = TestRun(exit_code=1, timed_out=False, tail=())


async def migration_fails(run: Pass) -> None:
    run.ecs.task_exit_code = 1


async def newer_commit_during_build(run: Pass) -> None:
    async def push_lands(tag: str) -> None:
        run.git.head = NEWER

    run.docker.during_build = push_lands


async def ecs_rolls_back_on_an_alarm(run: Pass) -> None:
    alarm = ServiceDeployment("arn:sd/1", "ROLLBACK_SUCCESSFUL", alarms_triggered=("web-5xx",))
    run.ecs.during_update = lambda td: run.ecs.service_deployments.__setitem__(td, alarm)


async def started_then_lost(run: Pass) -> None:
    """A deploy of the revision was started, and ECS runs what ran before: failed unwatched."""
    run.memory.attempt = Attempt(
        revision=REVISION,
        task_definition="arn:aws:ecs:us-east-1:123456789012:task-definition/web:9",
        previous=run.live_task_definition(),
        config_fingerprint=run.app.fingerprint(),
        deployment_id="ecs-svc/9",
    )


async def rolling_out(run: Pass) -> None:
    """A deploy of the revision in flight, as a restarted daemon finds it."""
    previous = run.live_task_definition()
    rollout = await run.roll_out(settle_after=2)
    run.memory.attempt = Attempt(
        revision=REVISION,
        task_definition=rollout.task_definition,
        previous=previous,
        config_fingerprint=run.app.fingerprint(),
        deployment_id=rollout.deployment_id,
    )


async def another_controller(run: Pass) -> None:
    assert run.ecs.state is not None
    run.ecs.state = dataclasses.replace(
        run.ecs.state, rollout=RolloutSettings(controller="CODE_DEPLOY")
    )


@dataclass
class Case:
    arrange: Arrange
    next: Next
    phase: Phase
    result: str | None = None  # the newest history entry's result
    built: bool = False
    pushed: bool = False
    updates: int = 0  # UpdateService calls, the daemon's rollbacks included
    app: dict[str, Any] = field(default_factory=dict)


CASES = {
    "in sync": Case(already_live, Next.WAIT, Phase.IN_SYNC, updates=1),
    "suspended: observe only": Case(nothing, Next.WAIT, Phase.SUSPENDED, app={"suspended": True}),
    "held: nothing written": Case(held, Next.WAIT, Phase.FAILED),
    "build, test, push, deploy": Case(
        nothing,
        Next.WAIT,
        Phase.IN_SYNC,
        "deployed",
        built=True,
        pushed=True,
        updates=1,
        app={"test": {"command": ["t"]}},
    ),
    "build with the test stage beside, test, push, deploy": Case(
        nothing,
        Next.WAIT,
        Phase.IN_SYNC,
        "deployed",
        built=True,
        pushed=True,
        updates=1,
        app={"test": {"command": ["t"], "target": "test"}},
    ),
    "a failed test in the test stage stops before any push": Case(
        failing_test,
        Next.WAIT,
        Phase.FAILED,
        "test_failed",
        built=True,
        app={"test": {"command": ["t"], "target": "test"}},
    ),
    "an image in the registry is deployed without a build": Case(
        already_pushed, Next.WAIT, Phase.IN_SYNC, "deployed", pushed=True, updates=1
    ),
    "a failed test stops before the push": Case(
        failing_test,
        Next.WAIT,
        Phase.FAILED,
        "test_failed",
        built=True,
        app={"test": {"command": ["t"]}},
    ),
    "a newer commit during the build starts over": Case(
        newer_commit_during_build, Next.AGAIN, Phase.PUSHING, "superseded", built=True, pushed=True
    ),
    "a failed pre-deploy task leaves the service alone": Case(
        migration_fails,
        Next.WAIT,
        Phase.FAILED,
        "pre_deploy_failed",
        built=True,
        pushed=True,
        app={"pre_deploy": {"command": ["migrate"]}},
    ),
    "a rollout ECS rolled back is held": Case(
        ecs_rolls_back_on_an_alarm,
        Next.WAIT,
        Phase.FAILED,
        "rolled_back",
        built=True,
        pushed=True,
        updates=1,
    ),
    "a deploy that failed unwatched is held": Case(
        started_then_lost, Next.WAIT, Phase.FAILED, "failed"
    ),
    "a rollout in flight is watched to its end": Case(
        rolling_out, Next.WAIT, Phase.IN_SYNC, "deployed", updates=1
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_run_pass(case: Case) -> None:
    run = a_pass(**case.app)
    await case.arrange(run)
    assert await run_pass(run.session, woken=True) is case.next
    assert run.status.phase is case.phase
    newest = run.status.history[0].result.value if run.status.history else None
    assert newest == case.result
    assert (run.docker.builds != []) is case.built
    assert (run.image() in run.docker.pushes) is case.pushed
    cache = f"{REGISTRY}/web:cache-test"
    assert (cache in run.docker.pushes) is (case.pushed and "target" in case.app.get("test", {}))
    assert len(run.ecs.updates) == case.updates


async def test_a_service_another_controller_drives_is_refused_before_any_write() -> None:
    run = a_pass()
    await another_controller(run)
    with pytest.raises(StalledError, match="CODE_DEPLOY"):
        await run_pass(run.session, woken=True)
    assert run.docker.builds == [] and run.ecs.registered == [] and run.ecs.updates == []


async def test_a_deploy_settles_the_app() -> None:
    """After a watched success: no hold, no attempt, no failed builds of the revision; live
    and desired agree, and the extra tags name the revision."""
    run = a_pass(extra_tags=["latest"])
    run.memory.build_failures[REVISION] = 1
    assert await run_pass(run.session, woken=True) is Next.WAIT
    written = run.written
    assert written.hold is None and written.attempt is None and written.build_failures == {}
    assert written.tagged == REVISION and run.registry.tags == {"latest": REVISION}
    assert run.status.live_image == run.status.desired_image == run.image()
    assert run.count("deployed") == 1


async def test_an_operators_sync_clears_the_hold_and_deploys() -> None:
    run = a_pass()
    await held(run)
    assert await run_pass(run.session, woken=True, clear_hold=True) is Next.WAIT
    assert run.status.phase is Phase.IN_SYNC
    assert len(run.ecs.updates) == 1


async def test_an_owed_rollback_is_paid_before_git_is_asked() -> None:
    run = a_pass()
    stable = run.live_task_definition()
    await run.roll_out()
    run.memory.hold = Hold(REVISION, "failed", run.app.fingerprint(), rollback_to=stable)
    run.git.fail_next("resolve", GitUnavailable("ls-remote: connection refused"))
    with pytest.raises(GitUnavailable):
        await run_pass(run.session, woken=True)
    assert run.ecs.updates[-1] == stable
    hold = run.written.hold
    assert hold is not None and hold.rollback_to is None


async def test_a_state_that_cannot_be_written_holds_with_a_retry() -> None:
    """Transient: the disk may have room again soon; the reason names the write error."""
    run = a_pass()
    run.store.refusing = "cannot write state file: No space left on device"
    await run.store.save("web")  # the failed write the pass finds
    assert await run_pass(run.session, woken=True) is Next.RETRY
    assert run.status.phase is Phase.FAILED
    assert "No space left on device" in (run.status.last_error or "")
    assert run.ecs.registered == [] and run.docker.builds == []


async def test_a_revision_held_for_its_builds_shows_the_last_build_output() -> None:
    run = a_pass()
    run.memory.build_failures[REVISION] = MAX_BUILD_ATTEMPTS
    now = utcnow()
    run.memory.history.insert(
        0, HistoryEntry(REVISION, Result.BUILD_FAILED, now, now, "RUN make\nmake: *** [all] 2")
    )
    assert await run_pass(run.session, woken=True) is Next.WAIT
    assert "make: *** [all] 2" in (run.status.last_error or "")
    assert run.docker.builds == []


async def test_a_new_revision_never_stands_beside_in_sync_while_ecs_runs_the_old_one() -> None:
    """A poller reading the status at every point a pass waits, while the pass moves the app
    from a live revision to a newer one, never sees phase InSync beside a desired revision
    that ECS does not run: the new revision and the phase it leaves InSync for are set
    together. The pass still ends InSync on the new revision."""
    run = a_pass()
    assert await run_pass(run.session, woken=True) is Next.WAIT
    assert (run.status.phase, run.status.desired_revision) == (Phase.IN_SYNC, REVISION)
    run.git.head = NEWER
    seen: list[tuple[dict[str, Any], str]] = []

    async def poll() -> None:
        while True:
            running = run.ecs.image_of(run.live_task_definition())
            seen.append((run.status.to_json(), running))
            await asyncio.sleep(0)

    poller = asyncio.create_task(poll())
    try:
        assert await run_pass(run.session, woken=True) is Next.WAIT
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    false_in_sync = [
        (document["phase"], document["desired"]["revision"], running)
        for document, running in seen
        if document["phase"] == "InSync" and document["desired"]["image"] != running
    ]
    assert false_in_sync == []
    assert any(document["desired"]["revision"] == NEWER for document, _ in seen)
    assert (run.status.phase, run.status.desired_revision) == (Phase.IN_SYNC, NEWER)
    assert run.status.live_image == f"{REGISTRY}/web:{NEWER}"


def slow_cache_push(run: Pass) -> tuple[asyncio.Event, asyncio.Event]:
    """The cache image's push takes longer than the rest of the deploy; (pushed, stopped)."""
    cache = f"{REGISTRY}/web:cache-test"
    pushed, stopped = asyncio.Event(), asyncio.Event()
    real_push = run.docker.push

    async def push(image: str, *, auth: Any) -> str:
        if image == cache:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                stopped.set()
                raise
            pushed.set()
        return await real_push(image, auth=auth)

    run.docker.push = push  # type: ignore[method-assign]
    return pushed, stopped


async def test_the_cache_image_goes_beside_the_deploy_and_a_failed_deploy_stops_it() -> None:
    """The deploy does not wait for it; the pass ends with it, unless the pass failed."""
    run = a_pass(test={"command": ["t"], "target": "test"})
    pushed, _ = slow_cache_push(run)
    with capture_logs() as logged:
        assert await run_pass(run.session, woken=True) is Next.WAIT
    assert pushed.is_set() and run.status.phase is Phase.IN_SYNC
    said = [e.get("phase") or e["event"] for e in logged]
    assert said.index("InSync") < said.index("cache_pushed")

    failing = a_pass(test={"command": ["t"], "target": "test"})
    pushed, stopped = slow_cache_push(failing)
    failing.ecs.fail_next("register_task_definition", StalledError("AccessDenied"))
    with pytest.raises(StalledError):
        await run_pass(failing.session, woken=True)
    assert stopped.is_set() and not pushed.is_set()
