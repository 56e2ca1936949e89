"""One app's loop against in-memory fakes: retries, holds, supersession and what is not done."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from reconciler.aio import backoff
from reconciler.app.state import FileStateStore
from reconciler.decisions.model import Phase
from reconciler.errors import AwsUnavailable, BranchEmpty, BuildFailed, GitRevisionNotFound
from tests.support.fakes import FakeWorld
from tests.support.probes import eventually, record_delays

A = "a" * 40
B = "b" * 40


@asynccontextmanager
async def running(world: FakeWorld) -> AsyncIterator[FakeWorld]:
    task = asyncio.create_task(world.loop.run())
    try:
        yield world
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- backoff -------------------------------------------------------------------------------


def test_backoff_grows_with_jitter_and_never_passes_the_cap() -> None:
    """Each delay lies in [step/2, step] of a doubling step capped at `cap`, and they vary."""
    rng = random.Random(7)
    delays = [backoff.backoff_delay(a, base=0.5, cap=8.0, rng=rng) for a in range(10)]
    for attempt, delay in enumerate(delays):
        step = min(8.0, 0.5 * 2**attempt)
        assert step / 2 <= delay <= step
    assert len({round(d / min(8.0, 0.5 * 2**a), 9) for a, d in enumerate(delays)}) > 1


def test_backoff_survives_an_outage_of_many_days() -> None:
    """Attempt 2000 (a week of retries at a 300 s cap) still gives a delay, not OverflowError."""
    for attempt in (1023, 1024, 2000, 10**9):
        assert 150.0 <= backoff.backoff_delay(attempt, base=2.0, cap=300.0) <= 300.0


# --- retries -------------------------------------------------------------------------------


async def test_a_retried_update_service_reuses_the_registered_task_definition(
    tmp_path: Path,
) -> None:
    """Throttled UpdateService: retried until it passes, with one registration, no failure."""
    world = FakeWorld.create(tmp_path, head=A)
    world.ecs.fail_next("update_service", *(AwsUnavailable("Throttling") for _ in range(3)))
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="in sync")
    assert world.live_image() == world.image(A)
    assert len(world.ecs.registered) == 1
    assert world.ecs.updates == world.ecs.registered
    assert [h.result.value for h in world.status.history] == ["deployed"]
    assert world.count("retry") == 3


async def test_a_stalled_error_is_retried_with_backoff_without_a_nudge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deleted branch is noticed again once it is back, with no webhook and no poll."""
    delays = record_delays(monkeypatch)
    world = FakeWorld.create(tmp_path, head=A, poll_interval=3600.0)
    missing = GitRevisionNotFound("branch 'main' not found")
    world.git.fail_next("resolve", *(missing for _ in range(4)))
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="in sync")
    assert [a for a, _ in delays] == [0, 1, 2, 3]
    assert world.status.last_error is None
    assert world.ecs.updates and world.live_image() == world.image(A)


async def test_a_repository_with_no_commit_yet_is_a_warning_and_a_wait_for_a_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No backoff, no pass_failed: said once as a warning and in last_error; the app counts
    as observed; the push's nudge deploys its first commit."""
    delays = record_delays(monkeypatch)
    world = FakeWorld.create(tmp_path, head=A, poll_interval=3600.0)
    empty = BranchEmpty("branch 'main' of file:///srv/web.git has no commit yet")
    world.git.fail_next("resolve", empty, empty)
    with capture_logs() as logged:
        async with running(world):
            await eventually(lambda: world.git.resolves == 1, what="the first look")
            await eventually(lambda: world.status.observed, what="observed")
            assert world.status.last_error == str(empty)
            world.loop.nudge()  # a push that is not there yet: still empty, said again quietly
            await eventually(lambda: world.git.resolves == 2, what="the second look")
            world.loop.nudge()  # the first commit
            await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="in sync")
    said = [(e["event"], e["log_level"]) for e in logged if e["event"] == "branch_empty"]
    assert said == [("branch_empty", "warning"), ("branch_empty", "debug")]
    assert not [e for e in logged if e["event"] == "pass_failed"]
    assert delays == []
    assert world.status.last_error is None
    assert world.count("branch_empty") == 2


async def test_no_retry_waits_longer_than_the_poll_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 1-minute cap but a 20 ms poll, the retries come at least as often as polls."""
    slept: list[float] = []
    real_sleep = backoff.sleep

    async def recording(delay: float, *, wakeup: asyncio.Event | None = None) -> bool:
        slept.append(delay)
        return await real_sleep(delay, wakeup=wakeup)

    monkeypatch.setattr(backoff, "sleep", recording)
    world = FakeWorld.create(
        tmp_path,
        head=A,
        poll_interval=0.02,
        timings=backoff.Timings(retry_base=60.0, retry_cap=60.0, rollout_polls=(0.01,)),
    )
    world.git.fail_next("resolve", *(AwsUnavailable("down") for _ in range(3)))
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="in sync")
    assert slept[:3] == [0.02, 0.02, 0.02]


# --- holds ---------------------------------------------------------------------------------


async def test_after_three_failed_builds_the_hold_shows_the_build_output(tmp_path: Path) -> None:
    """Failed after 3 builds; last_error keeps the build's last lines; no 4th build."""
    world = FakeWorld.create(tmp_path, head=A)
    tail = ["Step 2/2 : RUN make", "make: *** [all] Error 2"]
    world.docker.fail_next(
        "build", *(BuildFailed("build failed: make", log_tail=tail) for _ in range(5))
    )
    async with running(world):
        await eventually(lambda: world.count("held") >= 1, what="held")
        world.loop.nudge()
        await eventually(lambda: world.count("held") >= 2, what="held again")
    assert world.status.phase is Phase.FAILED
    assert "failed 3 times" in (world.status.last_error or "")
    assert "make: *** [all] Error 2" in (world.status.last_error or "")
    assert len(world.docker.builds) == 3
    assert world.ecs.registered == [] and world.ecs.updates == []
    assert world.store.load("web").build_failures == {A: 3}


# --- a newer revision wins -----------------------------------------------------------------


async def test_a_nudge_before_registration_drops_the_older_revision(tmp_path: Path) -> None:
    """B announced after A's build but before its registration: A never reaches ECS."""
    world = FakeWorld.create(tmp_path, head=A)

    async def push_b_after_the_build(tag: str) -> None:
        if tag == world.image(A):
            world.loop.nudge()  # the webhook for B arrives while A builds ...

    real_task_definition = world.ecs.task_definition

    async def push_b_during_deploy(arn: str) -> tuple[dict[str, object], list[object]]:
        if world.docker.builds == [world.image(A)] and world.git.head == A:
            world.git.head = B  # ... and B lands after the post-build look at git
            world.loop.nudge()
        return await real_task_definition(arn)

    world.docker.during_build = push_b_after_the_build
    world.ecs.task_definition = push_b_during_deploy  # type: ignore[method-assign]
    async with running(world):
        await eventually(
            lambda: world.status.phase is Phase.IN_SYNC and world.live_image() == world.image(B),
            what="B live",
        )
    images = [world.ecs.image_of(arn) for arn in world.ecs.registered]
    assert images == [world.image(B)]
    assert [world.ecs.image_of(arn) for arn in world.ecs.updates] == [world.image(B)]
    assert [h.result.value for h in world.status.history][-1] == "superseded"


async def test_a_nudge_during_update_service_cuts_the_older_rollout_short(
    tmp_path: Path,
) -> None:
    """B announced while A's UpdateService is on the wire: A's rollout is not waited out."""
    world = FakeWorld.create(tmp_path, head=A)
    world.ecs.settle_after = 1000  # A's rollout would take the whole rollout_timeout

    def push_b(task_definition: str) -> None:
        if world.ecs.image_of(task_definition) == world.image(A):
            world.git.head = B
            world.ecs.settle_after = 0
            world.loop.nudge()

    world.ecs.during_update = push_b
    async with running(world):
        await eventually(
            lambda: world.status.phase is Phase.IN_SYNC and world.live_image() == world.image(B),
            what="B live",
        )
    assert [world.ecs.image_of(arn) for arn in world.ecs.updates] == [
        world.image(A),
        world.image(B),
    ]
    results = [(h.revision, h.result.value) for h in world.status.history]
    assert results == [(B, "deployed"), (A, "superseded")]


async def test_a_burst_of_nudges_collapses_into_one_pass(tmp_path: Path) -> None:
    """500 nudges while idle start one pass; the nudges during it start one more, no more."""
    world = FakeWorld.create(tmp_path, head=A)
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="in sync")
        before = world.passes()
        world.git.head = B
        gate = asyncio.Event()

        async def slow_build(tag: str) -> None:
            await gate.wait()

        world.docker.during_build = slow_build
        for _ in range(500):
            world.loop.nudge()
        await eventually(lambda: world.status.phase is Phase.BUILDING, what="building")
        for _ in range(500):
            world.loop.nudge()
        gate.set()
        await eventually(lambda: world.live_image() == world.image(B), what="B live")
        await eventually(lambda: world.passes() == before + 2, what="the second pass")
        for _ in range(20):
            await asyncio.sleep(0)
        assert world.passes() == before + 2
    assert [world.ecs.image_of(arn) for arn in world.ecs.updates] == [
        world.image(A),
        world.image(B),
    ]


async def test_transient_errors_never_count_as_a_failed_revision(tmp_path: Path) -> None:
    """Errors at every step are retried; the history only ever shows the deploy."""
    world = FakeWorld.create(tmp_path, head=A)
    for call in ("describe_service", "register_task_definition", "update_service"):
        world.ecs.fail_next(call, AwsUnavailable("throttled"), AwsUnavailable("throttled"))
    world.registry.fail_next("has_tag", AwsUnavailable("throttled"))
    world.docker.fail_next("push", AwsUnavailable("throttled"))
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="in sync")
    assert [h.result.value for h in world.status.history] == ["deployed"]
    assert world.store.load("web").build_failures == {}
    assert world.store.load("web").hold is None


async def test_an_owed_rollback_is_paid_even_while_git_is_unreachable(tmp_path: Path) -> None:
    """A failed revision must not stay live because the git server went down after it failed."""
    from reconciler.app.state import AppMemory
    from reconciler.decisions.model import Hold
    from reconciler.errors import GitUnavailable

    world = FakeWorld.create(tmp_path, head=A)
    stable = world.ecs.state.task_definition if world.ecs.state else ""
    failed = await world.ecs.register_task_definition(
        {"family": "web", "containerDefinitions": [{"name": "app", "image": world.image(A)}]}, []
    )
    await world.ecs.update_service(cluster="cluster", service="web", task_definition=failed)
    world.store.save_now(
        "web",
        AppMemory(hold=Hold(A, "rollout timed out", world.app.fingerprint(), rollback_to=stable)),
    )
    world.git.fail_next("resolve", *(GitUnavailable("remote down") for _ in range(1000)))
    async with running(world):
        await eventually(lambda: world.ecs.updates[-1:] == [stable], what="the rollback")
        await eventually(lambda: world.git.resolves >= 2, what="git retried")
    hold = world.store.load("web").hold
    assert hold is not None and hold.rollback_to is None
    assert world.live_image() == f"{world.image('bootstrap')}"
    assert world.ecs.updates.count(stable) == 1


# --- status says no more than it knows ----------------------------------------------------


async def test_a_revision_that_cannot_be_deployed_shows_as_desired_and_not_in_sync(
    tmp_path: Path,
) -> None:
    """The registry refuses the credentials for the new revision: status names the new
    revision as desired and leaves InSync, so the in-sync alert fires."""
    from reconciler.errors import StalledError

    world = FakeWorld.create(tmp_path, head=A)
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="in sync at A")
        world.git.head = B
        world.registry.fail_next(
            "has_tag", *(StalledError("registry refused the credentials") for _ in range(50))
        )
        world.loop.nudge()
        await eventually(
            lambda: world.status.last_error == "registry refused the credentials",
            what="the error",
        )
        assert world.status.desired_revision == B
        assert world.status.phase is not Phase.IN_SYNC
        assert world.live_image() == world.image(A)


async def test_a_full_disk_stops_a_deploy_before_update_service_and_a_later_write_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attempt cannot be written: no UpdateService; once the disk has room, one."""
    import errno

    from reconciler.app.state import AppMemory, FileStateStore

    real_write = FileStateStore._write
    full = {"on": True}

    def write(store: FileStateStore, app: str, memory: AppMemory) -> None:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(store, app, memory)

    monkeypatch.setattr(FileStateStore, "_write", write)
    world = FakeWorld.create(tmp_path, head=A)
    async with running(world):
        await eventually(
            lambda: "No space left on device" in (world.status.last_error or ""),
            what="the write error shown",
        )
        await eventually(lambda: world.count("held") >= 2, what="held passes")
        assert world.ecs.updates == []
        assert world.status.phase is Phase.FAILED
        full["on"] = False
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="in sync")
    assert len(world.ecs.updates) == 1


async def test_a_state_write_that_fails_mid_pass_is_in_last_error_at_once(tmp_path: Path) -> None:
    """A state write that fails in a pass that goes on (here the state file cannot be replaced
    once UpdateService is out; the rollout then succeeds) is said in `last_error` by the
    time the pass ends, not at the next pass: the app is InSync on the new revision and
    `last_error` names the state file and why. Once the file can be written again, the next pass
    writes what was kept in memory and the error goes."""
    world = FakeWorld.create(tmp_path, head=A)
    state_file = tmp_path / "apps" / "web.json"  # where FileStateStore keeps the app's state

    def state_dir_breaks(task_definition: str) -> None:
        # A real failure, for root as for anyone (file modes would not stop root): a
        # directory where the file is renamed to.
        state_file.unlink()
        state_file.mkdir()

    async with running(world):
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="A live")
        passes = world.passes()
        world.ecs.during_update = state_dir_breaks
        world.git.head = B
        world.loop.nudge()
        await eventually(lambda: world.passes() > passes, what="the pass that deploys B")
        assert (world.status.phase, world.live_image()) == (Phase.IN_SYNC, world.image(B))
        error = world.status.last_error or ""
        assert error == f"cannot write state file {state_file}: Is a directory", error
        assert world.state_write_failing() == 1
        state_file.rmdir()
        world.loop.nudge()
        await eventually(lambda: world.status.last_error is None, what="the error cleared")
    assert world.state_write_failing() == 0
    written = FileStateStore(tmp_path).peek("web")
    assert [(h.revision, h.result.value) for h in written.history][:1] == [(B, "deployed")]


# --- who asked ----------------------------------------------------------------------------


async def test_the_outcome_of_a_sync_names_who_asked_and_a_polled_one_nobody(
    tmp_path: Path,
) -> None:
    """A deploy started by alice's sync says so in the history and the state; the next,
    found by polling, names nobody."""
    world = FakeWorld.create(tmp_path, head=A)
    async with running(world):
        await eventually(lambda: world.status.phase is Phase.IN_SYNC, what="A live")
        world.git.head = B
        world.loop.sync(by="alice")
        await eventually(lambda: world.live_image() == world.image(B), what="B live")
        await eventually(lambda: len(world.status.history) == 2, what="B recorded")
        world.git.head = "c" * 40
        world.loop.nudge()
        await eventually(lambda: len(world.status.history) == 3, what="C recorded")
    latest, synced, first = list(world.status.history)
    assert (first.by, synced.by, latest.by) == (None, "alice", None)
    assert [h.by for h in world.store.load("web").history] == [None, "alice", None]
