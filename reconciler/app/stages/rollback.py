"""Roll back: a failed rollout is held, the service put back on what it ran before, and that
rollback watched to its end.

The hold is written before the rollback is issued, so a daemon that dies in between finds
the hold (never redeploys) and the rollback still owed. A hold that cannot be written is
kept in memory and the rollback goes out anyway: a rollback never waits for the disk. The
outcome is `rolled_back` once the service runs the previous task definition again (by ECS's
rollback or the daemon's), `rollback_failed` when neither got it there (louder: the service
may be serving neither revision), `failed` when no rollback was asked for.
"""

from __future__ import annotations

import dataclasses

import structlog

from reconciler.app.stages.analysis import results_of
from reconciler.app.stages.context import PassContext
from reconciler.app.stages.watch import Rollout, Watched, watch
from reconciler.decisions.model import Hold, Phase, Result, Started, utcnow

log = structlog.get_logger("reconciler.pass")


async def hold_failed(ctx: PassContext, ended: Watched, *, previous: str | None) -> Result:
    """Hold the revision after a failed rollout, pay the rollback it owes and watch it."""
    app, memory = ctx.app, ctx.memory
    reason = ended.reason
    log.error(
        "rollout_failed",
        reason=reason,
        rolled_back_by_ecs=ended.rolled_back_by_ecs,
        rollback_failed=ended.rollback_failed,
    )
    owed = previous if (app.rollback and not ended.rolled_back_by_ecs and previous) else None
    memory.hold = Hold(
        revision=ctx.revision, reason=reason, config_fingerprint=app.fingerprint(), rollback_to=owed
    )
    memory.attempt = None  # the hold says it all now
    await ctx.session.save()
    result = _result(ended, owed=owed)
    try:
        if owed:
            try:
                started = await roll_back(ctx, owed)
            except BaseException:
                # AWS down: nothing was rolled back yet. The hold still owes the rollback and
                # the next pass plans RollBack; until then the outcome is a plain failure.
                result = Result.FAILED
                raise
            ctx.report.failed(reason)
            if started is not None:
                result, reason = await _watch_rollback(ctx, started, owed, reason)
    finally:
        # Failed is said once the rollback is out (or could not be): whoever waits for it
        # sees the service already on its way back.
        ctx.report.failed(reason)
        await ctx.report.outcome(
            revision=ctx.revision,
            result=result,
            started_at=ctx.started_at,
            error=reason,
            analysis=results_of(ctx),
        )
    if result in {Result.ROLLED_BACK, Result.ROLLBACK_FAILED}:
        ctx.report.rolled_back(outcome=result.value)
    if result is Result.ROLLBACK_FAILED:
        log.error(
            "rollback_failed",
            failed_revision=ctx.revision,
            rollback_to=owed or previous,
            reason=reason,
        )
    ctx.report.count(result.value)
    return result


async def put_back(ctx: PassContext, service: str, task_definition: str) -> Started | None:
    """UpdateService of `service` to `task_definition` unless it runs it already; the
    deployment it started, None when there was nothing to do."""
    cluster = ctx.app.cluster
    state = await ctx.io.ecs.describe_service(cluster, service)
    if state.task_definition == task_definition:
        return None
    started = await ctx.io.ecs.update_service(
        cluster=cluster, service=service, task_definition=task_definition
    )
    ctx.report.service_updated(kind="rollback")
    log.warning(
        "rollback_started",
        service=service,
        task_definition=task_definition,
        deployment=started.deployment_id,
        service_deployment=started.service_deployment,
    )
    return started


def _result(ended: Watched, *, owed: str | None) -> Result:
    if owed:
        return Result.ROLLED_BACK  # until the watch of the rollback says otherwise
    if ended.rollback_failed:
        return Result.ROLLBACK_FAILED
    if ended.rolled_back_by_ecs:
        return Result.ROLLED_BACK
    return Result.FAILED


async def _watch_rollback(
    ctx: PassContext, started: Started, task_definition: str, reason: str, *, service: str = ""
) -> tuple[Result, str]:
    ended = await watch(
        ctx,
        Rollout(
            deployment_id=started.deployment_id,
            task_definition=task_definition,
            previous=None,
            since=utcnow(),
            service_deployment=started.service_deployment,
            service=service,
        ),
        kind="rollback",
        supersedable=False,
    )
    if ended.succeeded:
        return Result.ROLLED_BACK, reason
    return (
        Result.ROLLBACK_FAILED,
        f"{reason}; the rollback to {task_definition} failed too: {ended.reason}",
    )


async def roll_back(ctx: PassContext, task_definition: str) -> Started | None:
    """Point the service at `task_definition` unless it is there already; the debt is paid.
    The deployment it started, None when there was nothing to do."""
    app, memory = ctx.app, ctx.memory
    try:
        started = await put_back(ctx, app.service, task_definition)
    finally:
        ctx.report.phase(Phase.FAILED)
    if memory.hold is not None:
        memory.hold = dataclasses.replace(memory.hold, rollback_to=None)
        await ctx.session.save()
    ctx.report.live(task_definition=task_definition, image=None)
    return started
