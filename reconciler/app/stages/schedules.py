"""Scheduled tasks that follow a release (SPEC 20): once every service runs the revision,
each EventBridge rule and Scheduler schedule of `schedules` gets, in each ECS target whose
task definition is of a family of the app, the release's task definition of that family.
Every other field of the target is sent back as AWS gave it.

Each move is written to the release (memory.release) before its write goes out, so a
failed release, or a daemon killed in between, knows what to put back. A refused write
(AccessDenied, a rule that is gone) raises AwsRejected: release.py fails the release and
puts back the services and any schedule already moved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

import structlog

from reconciler.adapters.ports import SchedulesPort
from reconciler.app.stages.context import PassContext
from reconciler.decisions.model import Phase, Release, ScheduleMove
from reconciler.decisions.schedules import (
    ScheduleRef,
    Target,
    ecs_targets,
    family_of,
    moves,
    parse_ref,
    schedule_target,
    schedule_with,
    targets_with,
)
from reconciler.errors import AwsRejected

log = structlog.get_logger("reconciler.pass")
KIND = "schedule"  # a part's kind in AppStatus


def _port(ctx: PassContext) -> SchedulesPort:
    if ctx.io.schedules is None:
        raise AwsRejected("schedules are configured but no EventBridge client is open")
    return ctx.io.schedules


async def targets_of(schedules: SchedulesPort, ref: ScheduleRef) -> list[Target]:
    """The ECS targets the rule or schedule has now."""
    if ref.kind == "rule":
        return ecs_targets(await schedules.rule_targets(ref.name))
    return schedule_target(await schedules.schedule(group=ref.group, name=ref.name))


async def _write(schedules: SchedulesPort, ref: ScheduleRef, arns: Mapping[str, str]) -> None:
    """Point the targets in `arns` (id -> task definition) at their new task definition."""
    if ref.kind == "rule":
        targets = await schedules.rule_targets(ref.name)
        await schedules.put_targets(ref.name, targets_with(targets, arns))
        return
    schedule = await schedules.schedule(group=ref.group, name=ref.name)
    request = schedule_with(schedule, arns[""], fields=schedules.update_fields())
    await schedules.update_schedule(request)


@dataclasses.dataclass(frozen=True)
class Refused:
    """A schedule AWS would not let the release read or move (retrying does not help)."""

    schedule: str
    reason: str


async def move_schedules(
    ctx: PassContext, release: Release, new: Mapping[str, str]
) -> Refused | None:
    """Every schedule of the app onto `new` (family -> task definition), in order; the
    first refusal, after which nothing more is moved. The release in memory says what was
    moved (and what was about to be)."""
    for text in ctx.app.schedules:
        try:
            release = await _move(ctx, release, text, new)
        except AwsRejected as exc:
            log.error("schedule_refused", schedule=text, error=str(exc))
            return Refused(text, str(exc))
    await _remember(ctx, dataclasses.replace(release, schedules_done=True))
    return None


async def _move(ctx: PassContext, release: Release, text: str, new: Mapping[str, str]) -> Release:
    schedules = _port(ctx)
    ref = parse_ref(text)
    targets = await targets_of(schedules, ref)
    wanted = moves(targets, new)
    if wanted:
        # Records of this schedule's other targets (moved by an earlier, interrupted pass)
        # stay: a rollback puts those back too.
        kept = tuple(
            m
            for m in release.schedules
            if (m.schedule, m.target) not in {(text, target) for target in wanted}
        )
        records = tuple(
            ScheduleMove(text, target, previous=before, task_definition=after)
            for target, (before, after) in wanted.items()
        )
        release = dataclasses.replace(release, schedules=(*kept, *records))
        await _remember(ctx, release)
        await _write(schedules, ref, {t: after for t, (_, after) in wanted.items()})
        log.info("schedule_moved", schedule=text, targets=sorted(wanted))
    names = [new.get(family_of(t.task_definition), t.task_definition) for t in targets]
    ctx.report.part(
        text, task_definition=names[0] if names else None, phase=Phase.IN_SYNC, kind=KIND
    )
    return release


async def put_back(ctx: PassContext, text: str) -> None:
    """Put the targets of one schedule the release moved back on what they ran before; a
    target that names something else now (someone moved it since) is left alone."""
    release = ctx.memory.release
    assert release is not None
    records = [m for m in release.schedules if m.schedule == text]
    ref = parse_ref(text)
    schedules = _port(ctx)
    now = {t.id: t.task_definition for t in await targets_of(schedules, ref)}
    back = {m.target: m.previous for m in records if now.get(m.target) == m.task_definition}
    if back:
        await _write(schedules, ref, back)
        log.info("schedule_put_back", schedule=text, targets=back)
    shown = records[0].previous if records else None
    ctx.report.part(text, task_definition=shown, phase=Phase.FAILED, kind=KIND)


async def _remember(ctx: PassContext, release: Release) -> None:
    ctx.memory.release = release
    await ctx.session.save()


async def named_by_schedules(
    schedules: SchedulesPort, names: Collection[str], families: Collection[str]
) -> dict[str, str]:
    """Task definition -> the schedule that names it, for every ECS target of the
    schedules `names` (an app's `schedules`) whose family is one of `families` (what a
    release would move, what cleanup keeps)."""
    named: dict[str, str] = {}
    for text in names:
        for target in await targets_of(schedules, parse_ref(text)):
            if family_of(target.task_definition) in families:
                named.setdefault(target.task_definition, f"named by {text}")
    return named
