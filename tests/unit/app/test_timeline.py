"""A release's stages: recorded from what the reporter hears, kept in its history entry,
and bounded however many releases an app makes."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from reconciler.app.reporter import Reporter
from reconciler.app.stages.pipeline import run_pass
from reconciler.app.state import AppMemory, FileStateStore, cleared, encode_memory
from reconciler.app.status import AppStatus, RolloutView
from reconciler.decisions.approval import Vote
from reconciler.decisions.kept import (
    ERROR_CHARS,
    ERROR_LINE,
    ERRORS_KEPT,
    RELEASES_KEPT,
    STAGE_BUDGET,
    first_line,
)
from reconciler.decisions.model import Phase, Result, utcnow
from reconciler.decisions.timeline import MAX_STAGES
from reconciler.metrics import Metrics
from tests.support.fakes import COMMITTED
from tests.support.passes import REVISION, a_pass

DYNAMODB_ITEM = 400 * 1024  # the largest item the lease table can hold


class CountingStore:
    """A StateStore that keeps the memory and counts saves (encoding 10,000 times would
    only measure json)."""

    def __init__(self) -> None:
        self.memory = AppMemory()
        self.saves = 0

    def load(self, app: str) -> AppMemory:
        return self.memory

    def forget(self, app: str) -> None:
        pass

    def write_error(self, app: str) -> str | None:
        return None

    async def reset(self, app: str) -> AppMemory:
        return cleared(self.memory)

    async def save(self, app: str, memory: AppMemory | None = None) -> bool:
        self.saves += 1
        return True


async def test_a_deploy_pass_records_each_stage_and_the_commit_time() -> None:
    """A pass that builds, pushes, registers, rolls out and moves `latest` writes one entry
    whose stages are those, in order, each ended, within the entry's times; the lead time
    starts at the commit's time git gave."""
    run = a_pass(extra_tags=["latest"])
    await run_pass(run.session, woken=True)
    entry = run.memory.history[0]
    assert entry.result is Result.DEPLOYED
    assert entry.committed_at == COMMITTED
    names = [s.label for s in entry.stages]
    assert names == ["fetch", "verify", "build", "push", "register", "rollout web", "tags"]
    assert all(s.finished_at is not None for s in entry.stages)
    for stage in entry.stages[1:-1]:
        assert entry.started_at - timedelta(seconds=1) <= stage.started_at
        assert stage.finished_at is not None and stage.finished_at <= entry.finished_at
    assert run.written.history[0].stages == entry.stages[:-1]  # tags: with the next write
    assert run.status.timeline == []  # no release under way any more


async def test_a_pass_with_nothing_to_release_shows_no_timeline_and_writes_no_entry() -> None:
    run = a_pass()
    await run.roll_out()
    await run_pass(run.session, woken=True)
    assert run.status.phase is Phase.IN_SYNC
    assert run.status.timeline == []
    assert run.memory.history == []


def test_durations_heard_set_the_stages_and_ecs_lifecycle_stages_nest_in_the_rollout() -> None:
    """A build said to have taken 30 s began 30 s before it ended, whenever its phase was
    said; each lifecycle stage the rollout view reports is a step of that service's rollout,
    ended when the next one is seen or the rollout finishes."""
    status = AppStatus(name="web")
    report = Reporter(app="web", status=status, metrics=Metrics(), store=CountingStore())
    report.pass_began()
    report.desired(revision=REVISION, image="r/web:x")
    report.phase(Phase.BUILDING)
    report.build_took(30.0)
    built = next(s for s in status.timeline if s.name == "build")
    assert built.finished_at is not None
    assert built.finished_at - built.started_at == timedelta(seconds=30)
    began = utcnow()
    view = RolloutView(deployment="d", task_definition="td", started_at=began)
    for stage in ("RECONCILE_SERVICE", "BAKE_TIME"):
        report.rollout(RolloutView(**{**vars(view), "stage": stage}), service="web")
    report.rollout(RolloutView(**{**vars(view), "finished_at": utcnow()}), service="web")
    labels = [s.label for s in status.timeline]
    assert labels[-3:] == [
        "rollout web",
        "rollout web: RECONCILE_SERVICE",
        "rollout web: BAKE_TIME",
    ]
    assert all(s.finished_at is not None for s in status.timeline)


async def test_ten_thousand_releases_stay_within_the_bound() -> None:
    """However many releases an app makes, its state keeps RELEASES_KEPT, stages only on
    the newest (STAGE_BUDGET in all, each list at most MAX_STAGES), full errors on the
    newest ERRORS_KEPT and their first line on the others; written whole, with every bound
    full, it fits in one lease-table item."""
    store = CountingStore()
    status = AppStatus(name="web")
    report = Reporter(app="web", status=status, metrics=Metrics(), store=store)
    first = "build failed: " + "no such file " * 25
    error = first + "\n" + "step 3 of 9 failed\n" * 300
    for n in range(10_000):
        report.pass_began()
        report.desired(revision=f"{n:040x}", image="r/web:x")
        # Stages past the bound on the releases whose stages are kept (the older ones lose
        # theirs whatever they had).
        for step in range(MAX_STAGES + 5 if n >= 9_900 else 2):
            report.rollout(
                RolloutView(deployment="d", task_definition="td", stage=f"S{step}"),
                service=f"service-{step % 3}",
            )
        await report.outcome(
            revision=f"{n:040x}", result=Result.FAILED, started_at=utcnow(), error=error
        )
    history = store.memory.history
    assert len(history) == RELEASES_KEPT
    assert history[0].revision == f"{9999:040x}"
    with_stages = STAGE_BUDGET // MAX_STAGES
    assert all(len(e.stages) == MAX_STAGES for e in history[:with_stages])
    assert all(e.stages == () for e in history[with_stages:])
    assert all(len(e.error or "") == ERROR_CHARS for e in history[:ERRORS_KEPT])
    assert all(e.error == first_line(first) for e in history[ERRORS_KEPT:])
    assert len(history[-1].error or "") == ERROR_LINE
    assert len(status.history) == 20
    assert len(encode_memory(store.memory).encode()) < DYNAMODB_ITEM


async def test_a_restart_keeps_the_releases_and_their_stages(tmp_path: Path) -> None:
    """A daemon started again on the same state_dir reads every kept release back, stages
    and commit time included, and its status shows the newest."""
    run = a_pass(extra_tags=["latest"])
    await run_pass(run.session, woken=True)
    entry = run.memory.history[0]
    store = FileStateStore(tmp_path)
    assert store.save_now("web", run.memory)
    again = FileStateStore(tmp_path)  # the next daemon
    status = AppStatus(name="web")
    Reporter(app="web", status=status, metrics=Metrics(), store=again)
    assert again.load("web").history == run.memory.history
    assert status.history[0].stages == entry.stages
    assert status.history[0].committed_at == COMMITTED


async def test_a_restart_mid_release_goes_on_with_its_stages() -> None:
    """A release waiting for approval keeps its stages so far in the app's state; the next
    daemon (a new reporter on the same state) goes on with them, and the entry it writes
    has the build of the first and the rollout of the second."""
    run = a_pass(approval={"required": 1, "expire_after": "1h"})
    await run_pass(run.session, woken=True)
    kept = run.written.timeline
    assert kept is not None and kept.revision == REVISION
    before = [s.name for s in kept.stages]
    assert "build" in before and "approval" in before, before

    run.session.report = Reporter(
        app="web", status=AppStatus(name="web"), metrics=Metrics(), store=run.store
    )
    request = run.memory.approval
    assert request is not None
    run.memory.approval = dataclasses.replace(request, approvals=(Vote(by="alice", at=utcnow()),))
    await run_pass(run.session, woken=True)
    entry = run.memory.history[0]
    assert entry.result is Result.DEPLOYED
    names = [s.name for s in entry.stages]
    assert names[: len(before)] == before, names
    assert "rollout" in names
    assert all(s.finished_at is not None for s in entry.stages)
    assert run.written.timeline is None  # an entry now
