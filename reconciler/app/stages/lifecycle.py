"""The gates at a lifecycle hook (SPEC 21): where the service's deployment configuration has
a PAUSE hook (ECS stops each deployment at that lifecycle stage until
ContinueServiceDeployment), an app's approval and metric analysis run there, while the new
revision has its test traffic and before production traffic shifts to it, instead of before
the service update and during the bake.

At the hook: the approval is asked for (the release shows AwaitingApproval, its votes are
kept in memory as for an approval before the update), then the checks are measured
`count` times `interval` apart, then the deployment is continued. A rejection, a lapsed
request or a failed check sends it back (ContinueServiceDeployment with ROLLBACK): ECS
rolls it back and the watch fails the release with the gate's reason. A daemon that
restarts there finds the deployment still stopped, the votes and measurements in memory,
and goes on.

An app without gates leaves a hook alone: whoever put it there continues it (or its
timeout does).
"""

from __future__ import annotations

import structlog

from reconciler.app.stages.analysis import analyse, run_for, start_now
from reconciler.app.stages.approval import approval_now
from reconciler.app.stages.context import PassContext
from reconciler.app.stages.watch import AtHook, HookTurn, Rollout
from reconciler.decisions.analysis import State
from reconciler.decisions.model import HookAction, Phase, ServiceDeployment

log = structlog.get_logger("reconciler.pass")


def gates_at_hook(ctx: PassContext, rollout: Rollout) -> AtHook:
    """What the watch of `rollout` asks at each look that finds it stopped at a hook."""
    answered: set[str] = set()  # hooks already continued or sent back by this watch

    async def turn(found: ServiceDeployment) -> HookTurn:
        hook = found.paused_hook
        assert hook is not None
        if hook in answered:
            return HookTurn(waiting=True)  # ECS has not moved on yet
        app = ctx.app
        if app.approval is not None:
            said, reason = await approval_now(ctx)
            if said is None:
                return HookTurn(waiting=True)
            if not said:
                await _answer(ctx, found, "ROLLBACK", answered, reason=reason)
                return HookTurn(refused=reason)
            ctx.report.phase(Phase.DEPLOYING)
        if app.analysis:
            # Measured while the deployment waits here: its test traffic only.
            verdict = await analyse(ctx, run_for(ctx, rollout), start=start_now)
            if verdict.state is State.FAILED:
                await _answer(ctx, found, "ROLLBACK", answered, reason=verdict.reason)
                return HookTurn(refused=verdict.reason)
        await _answer(ctx, found, "CONTINUE", answered)
        return HookTurn()

    return turn


async def _answer(
    ctx: PassContext,
    found: ServiceDeployment,
    action: HookAction,
    answered: set[str],
    *,
    reason: str = "",
) -> None:
    hook = found.paused_hook
    assert hook is not None
    await ctx.io.ecs.continue_service_deployment(arn=found.arn, hook=hook, action=action)
    answered.add(hook)
    event = "hook_continued" if action == "CONTINUE" else "hook_rolled_back"
    log.info(
        event,
        stage=found.lifecycle_stage,
        hook=hook,
        service_deployment=found.arn,
        reason=reason or None,
    )
