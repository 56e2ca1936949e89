"""Roll back: a failed rollout is held, and the service put back on what it ran before.

The hold is written before the rollback is issued, so a daemon that dies in between finds
the hold (never redeploys) and the rollback still owed. A hold that cannot be written is
kept in memory and the rollback goes out anyway: a rollback never waits for the disk.
"""

from __future__ import annotations

import dataclasses

import structlog

from reconciler.model import Hold, Phase, Result
from reconciler.stages.context import PassContext

log = structlog.get_logger("reconciler.pass")


async def hold_failed(
    ctx: PassContext, *, reason: str, rolled_back_by_ecs: bool, previous: str | None
) -> Result:
    """Hold the revision after a failed rollout and pay the rollback it owes."""
    app, memory = ctx.app, ctx.memory
    log.error("rollout_failed", reason=reason, rolled_back_by_ecs=rolled_back_by_ecs)
    owed = previous if (app.rollback and not rolled_back_by_ecs and previous) else None
    memory.hold = Hold(
        revision=ctx.revision,
        reason=reason,
        config_fingerprint=app.fingerprint(),
        rollback_to=owed,
    )
    memory.attempt = None  # the hold says it all now
    ctx.session.save()
    result = Result.ROLLED_BACK if (owed or rolled_back_by_ecs) else Result.FAILED
    ctx.report.outcome(
        revision=ctx.revision, result=result, started_at=ctx.started_at, error=reason
    )
    try:
        if owed:
            # If this raises (AWS down), the hold still owes the rollback and the next pass
            # plans RollBack.
            await roll_back(ctx, owed)
    finally:
        # Failed is said once the rollback is out (or could not be): whoever waits for it
        # sees the service already on its way back.
        ctx.report.failed(reason)
    ctx.report.count(result.value)
    return result


async def roll_back(ctx: PassContext, task_definition: str) -> None:
    """Point the service at `task_definition` unless it is there already; the debt is paid."""
    app, memory = ctx.app, ctx.memory
    try:
        state = await ctx.io.ecs.describe_service(app.cluster, app.service)
        if state.task_definition != task_definition:
            deployment = await ctx.io.ecs.update_service(
                cluster=app.cluster, service=app.service, task_definition=task_definition
            )
            ctx.report.service_updated(kind="rollback")
            log.warning(
                "rollback_started", task_definition=task_definition, deployment=deployment
            )
    finally:
        ctx.report.phase(Phase.FAILED)
    if memory.hold is not None:
        memory.hold = dataclasses.replace(memory.hold, rollback_to=None)
        ctx.session.save()
    ctx.report.live(task_definition=task_definition, image=None)
