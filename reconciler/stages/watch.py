"""Watch: follow the rollout UpdateService started until it succeeded or failed.

Success is narrow (see verdict.py). Losing sight of ECS for a while is not a failure of the
rollout; a newer revision announced by a nudge ends the watch (its UpdateService replaces
the deployment in flight, so there is nothing to undo).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime

import structlog

from reconciler import backoff
from reconciler.errors import ReconcilerError, TransientError
from reconciler.model import Phase, utcnow
from reconciler.stages.context import PassContext
from reconciler.stages.supersede import superseded
from reconciler.verdict import RolloutFailed, RolloutSucceeded, judge

log = structlog.get_logger("reconciler.pass")


@dataclass(frozen=True)
class Rollout:
    """A deployment being watched: what it deploys, what ran before, since when."""

    deployment_id: str
    task_definition: str
    previous: str | None
    since: datetime


@dataclass(frozen=True)
class Watched:
    """How a watch ended: succeeded, failed (with why), or superseded by a newer revision."""

    succeeded: bool = False
    superseded: bool = False
    reason: str = ""
    rolled_back_by_ecs: bool = False


async def watch(ctx: PassContext, rollout: Rollout) -> Watched:
    session, app = ctx.session, ctx.app
    ctx.report.phase(Phase.DEPLOYING)
    began = time.monotonic()
    # A watch picked up after a restart keeps the deadline of the deploy it watches.
    elapsed_before = max(0.0, (utcnow() - rollout.since).total_seconds())
    deadline = began + max(0.0, app.rollout_timeout - elapsed_before)
    session.nudges.during_rollout.clear()
    while True:
        try:
            state = await ctx.io.ecs.describe_service(app.cluster, app.service)
        except TransientError as exc:
            log.warning("rollout_watch_error", error=str(exc))
            state = None
        if state is not None:
            verdict = judge(
                state, deployment_id=rollout.deployment_id, task_definition=rollout.task_definition
            )
            if isinstance(verdict, RolloutSucceeded):
                ctx.report.rollout_took(time.monotonic() - began)
                log.info(
                    "rollout_succeeded",
                    deployment=rollout.deployment_id,
                    task_definition=rollout.task_definition,
                )
                return Watched(succeeded=True)
            if isinstance(verdict, RolloutFailed):
                ctx.report.rollout_took(time.monotonic() - began)
                return Watched(reason=verdict.reason, rolled_back_by_ecs=verdict.rolled_back_by_ecs)
        if time.monotonic() >= deadline:
            ctx.report.rollout_took(time.monotonic() - began)
            return Watched(reason=f"rollout did not complete within {app.rollout_timeout:g}s")
        if session.nudges.since_resolve:
            session.nudges.during_rollout.clear()
            # Any git failure here (remote down, branch gone) only means "no newer revision
            # known": the rollout is still ours to judge and roll back.
            with contextlib.suppress(ReconcilerError):
                if await superseded(ctx, event="rollout_superseded"):
                    return Watched(superseded=True)
        step = backoff.rollout_step(time.monotonic() - began, session.timings.rollout_polls)
        await backoff.sleep(
            min(backoff.aligned(step), max(0.0, deadline - time.monotonic()) + 0.01),
            wakeup=session.nudges.during_rollout,
        )
