"""Watch: follow a rollout (a deploy, or the daemon's own rollback) until it succeeded or failed.

Where ECS keeps a service deployment record for it, that record's status is the verdict;
elsewhere the service's `deployments` list is (see decisions/verdict.py). The record is the one
UpdateService's answer named; where it named none, the watch looks for it
(ListServiceDeployments). The deadline is `rollout_timeout` plus the service's bake time, so a
bake never times out by itself; a watch picked up after a restart keeps the deadline of the
deploy it watches. Losing sight of ECS for a while is not a failure of the rollout. A newer
revision announced by a nudge ends the watch of a deploy (its UpdateService replaces the
deployment in flight). Where the path shows, the status carries the rollout's strategy, stage,
counts and alarms.

Where the service's deployments stop at a PAUSE lifecycle hook for the app's gates
(lifecycle.py), `at_hook` is asked at each look that finds one stopped there; the time spent
there does not count against the timeout, and a deployment the gates sent back is failed
with their reason once ECS rolled it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from reconciler.aio import backoff
from reconciler.app.stages.context import AppSession, PassContext
from reconciler.app.stages.supersede import superseded
from reconciler.app.status import RolloutView
from reconciler.decisions.model import Phase, ServiceDeployment, ServiceState, utcnow
from reconciler.decisions.verdict import (
    RolloutFailed,
    RolloutPending,
    RolloutSucceeded,
    Verdict,
    judge,
    judge_service_deployment,
)
from reconciler.errors import AwsRejected, ReconcilerError, TransientError

log = structlog.get_logger("reconciler.pass")
# Polls that may pass without finding the service deployment before the `deployments` list
# alone may declare success: ECS creates the record with the UpdateService, so only a region
# or account without records gets this far.
FIND_ATTEMPTS = 3


@dataclass(frozen=True)
class Rollout:
    """A deployment being watched: what it deploys, what ran before, since when."""

    deployment_id: str
    task_definition: str
    previous: str | None
    since: datetime
    service_deployment: str | None = None  # ECS's record, when already known
    # `since` is by this host's wall clock: the time before this watch counts against the
    # timeout. False for a rollout another host started: timed from this watch's start.
    timed_here: bool = True
    service: str = ""  # of a release of several services (SPEC 20); "": the app's service

    def of(self, ctx: PassContext) -> str:
        """The service this rollout moves."""
        return self.service or ctx.app.service


@dataclass(frozen=True)
class Watched:
    """How a watch ended: succeeded, failed (with why), or superseded by a newer revision."""

    succeeded: bool = False
    superseded: bool = False
    reason: str = ""
    rolled_back_by_ecs: bool = False
    rollback_failed: bool = False


@dataclass
class Sighting:
    """What a watch tells whoever follows its rollout's stages (the analysis): the bake the
    service has (once looked at), and that the bake began (ECS's lifecycle stage BAKE_TIME)."""

    looked: asyncio.Event = field(default_factory=asyncio.Event)
    baking: asyncio.Event = field(default_factory=asyncio.Event)
    bake: float = 0.0


@dataclass(frozen=True)
class HookTurn:
    """What the gates made of a deployment stopped at a PAUSE lifecycle hook."""

    waiting: bool = False  # nothing decided yet: asked again at the next look
    refused: str = ""  # why they sent it back (ECS rolls it back); "" when it went on


# The gates asked when ECS's record shows the deployment stopped at a PAUSE hook.
AtHook = Callable[[ServiceDeployment], Awaitable[HookTurn]]


@dataclass
class _Record:
    """What the watch knows of ECS's service deployment record."""

    arn: str | None
    finds: int = 0
    usable: bool = True
    read: bool = False  # `arn` was described once: it is not just taken on trust


async def watch(
    ctx: PassContext,
    rollout: Rollout,
    *,
    kind: str = "deploy",
    supersedable: bool = True,
    sighting: Sighting | None = None,
    at_hook: AtHook | None = None,
) -> Watched:
    session, app = ctx.session, ctx.app
    if kind == "deploy":
        ctx.report.phase(Phase.DEPLOYING)
    began = time.monotonic()
    elapsed_before = (
        max(0.0, (utcnow() - rollout.since).total_seconds()) if rollout.timed_here else 0.0
    )
    record = _Record(arn=rollout.service_deployment, usable=session.service_deployments_usable)
    view = RolloutView(
        deployment=rollout.deployment_id,
        task_definition=rollout.task_definition,
        kind=kind,
        started_at=rollout.since,
    )
    ctx.report.rollout(view, service=rollout.of(ctx))
    bake: float | None = None
    held = 0.0  # seconds spent stopped at a hook for the gates: the timeout leaves them out
    refused = ""  # the gates sent it back at a hook: why
    session.nudges.during_rollout.clear()
    first = session.timings.rollout_polls[0]
    if elapsed_before < first:
        # Just started: ECS cannot have finished it in the instant since, and the first look
        # on the grid every poll keeps is shared with the apps that started theirs a moment
        # apart (one DescribeServices for ten services), instead of one call each.
        await backoff.sleep(
            backoff.aligned(first), wakeup=session.nudges.during_rollout if supersedable else None
        )
    while True:
        state = await _service(ctx, rollout.of(ctx))
        if state is not None and bake is None:
            bake = state.rollout.bake_seconds
            if sighting is not None:
                sighting.bake = bake or 0.0
                sighting.looked.set()
        limit = app.rollout_timeout + (bake or 0.0)
        found = await _service_deployment(ctx, rollout, record) if state is not None else None
        if at_hook is not None and found is not None and found.paused_hook and not refused:
            asked = time.monotonic()
            turn = await at_hook(found)
            refused = turn.refused
            held += time.monotonic() - asked + (_step(session, began) if turn.waiting else 0.0)
        deadline = began + held + max(0.0, limit - elapsed_before)
        verdict = _verdict(rollout, state, found, record)
        if state is not None:
            view = _seen(view, state, found, rollout)
            ctx.report.rollout(view, service=rollout.of(ctx))
            if sighting is not None and view.stage == "BAKE_TIME":
                sighting.baking.set()
        over = time.monotonic() >= deadline
        if isinstance(verdict, RolloutSucceeded | RolloutFailed) or over:
            ctx.report.rollout_took(time.monotonic() - began)
            ctx.report.rollout(
                dataclasses.replace(view, finished_at=utcnow()), service=rollout.of(ctx)
            )
            return _ended(ctx, rollout, verdict, kind=kind, refused=refused, bake=bake)
        if supersedable and session.nudges.since_resolve:
            session.nudges.during_rollout.clear()
            # Any git failure here (remote down, branch gone) only means "no newer revision
            # known": the rollout is still ours to judge and roll back.
            with contextlib.suppress(ReconcilerError):
                if await superseded(ctx, event="rollout_superseded"):
                    return Watched(superseded=True)
        step = _step(session, began)
        await backoff.sleep(
            min(backoff.aligned(step), max(0.0, deadline - time.monotonic()) + 0.01),
            wakeup=session.nudges.during_rollout if supersedable else None,
        )


def _ended(
    ctx: PassContext,
    rollout: Rollout,
    verdict: Verdict,
    *,
    kind: str,
    refused: str,
    bake: float | None,
) -> Watched:
    """How the watch ended: by ECS's verdict, or (still pending) at its deadline."""
    if isinstance(verdict, RolloutSucceeded):
        log.info(
            "rollout_succeeded",
            kind=kind,
            deployment=rollout.deployment_id,
            task_definition=rollout.task_definition,
        )
        return Watched(succeeded=True)
    if isinstance(verdict, RolloutFailed):
        return Watched(
            reason=f"{refused} (sent back at its lifecycle hook)" if refused else verdict.reason,
            rolled_back_by_ecs=verdict.rolled_back_by_ecs,
            rollback_failed=verdict.rollback_failed,
        )
    timeout = ctx.app.rollout_timeout
    limit = timeout + (bake or 0.0)
    baked = f" (rollout_timeout {timeout:g}s + bake {bake:g}s)" if bake else ""
    return Watched(reason=f"rollout did not complete within {limit:g}s{baked}")


def _step(session: AppSession, began: float) -> float:
    """Seconds to the next look at a rollout watched since `began`."""
    return backoff.rollout_step(time.monotonic() - began, session.timings.rollout_polls)


async def _service(ctx: PassContext, service: str) -> ServiceState | None:
    try:
        return await ctx.io.ecs.describe_service(ctx.app.cluster, service)
    except TransientError as exc:
        log.warning("rollout_watch_error", error=str(exc))
        return None


async def _service_deployment(
    ctx: PassContext, rollout: Rollout, record: _Record
) -> ServiceDeployment | None:
    """ECS's record of the rollout, found once and then described on every poll; None where
    there is none (yet), or it cannot be read right now."""
    if not record.usable:
        return None
    ecs, app = ctx.io.ecs, ctx.app
    try:
        if record.arn is None:
            record.finds += 1
            found = await ecs.find_service_deployment(
                cluster=app.cluster,
                service=rollout.of(ctx),
                task_definition=rollout.task_definition,
            )
            if found is None:
                return None
            record.arn = found.arn
            await _remember(ctx, rollout, found.arn)
            return found
        described = await ecs.describe_service_deployment(cluster=app.cluster, arn=record.arn)
        record.read = True
        return described
    except AwsRejected as exc:
        if record.arn is not None and not record.read:
            # An ARN taken on trust (UpdateService's answer, or the attempt's) that ECS will
            # not describe: look for the record instead, as where the answer names none.
            log.warning("service_deployment_unreadable", arn=record.arn, error=str(exc))
            record.arn = None
            return None
        # Said once per app: from here on its rollouts are judged by the deployments list.
        record.usable = ctx.session.service_deployments_usable = False
        log.warning("service_deployments_unavailable", error=str(exc))
    except TransientError as exc:
        log.warning("rollout_watch_error", error=str(exc))
    return None


async def _remember(ctx: PassContext, rollout: Rollout, arn: str) -> None:
    """Keep the record's ARN with the attempt, so a restart reads the same record."""
    attempt = ctx.memory.attempt
    if attempt is not None and attempt.task_definition == rollout.task_definition:
        ctx.memory.attempt = dataclasses.replace(attempt, service_deployment=arn)
        await ctx.session.save()


def _verdict(
    rollout: Rollout, state: ServiceState | None, found: ServiceDeployment | None, record: _Record
) -> Verdict:
    if state is None:
        return RolloutPending()
    moved_away = state.task_definition != rollout.task_definition
    if found is not None:
        return judge_service_deployment(found, service_moved_away=moved_away)
    listed = judge(
        state, deployment_id=rollout.deployment_id, task_definition=rollout.task_definition
    )
    if isinstance(listed, RolloutSucceeded) and record.usable:
        if record.arn is not None:
            return RolloutPending()  # the record exists but could not be read this time
        if record.finds < FIND_ATTEMPTS:
            # The record may still turn up and say the rollout is baking: wait a few polls.
            return RolloutPending()
    return listed


def _seen(
    view: RolloutView, state: ServiceState, found: ServiceDeployment | None, rollout: Rollout
) -> RolloutView:
    ours = state.deployment(rollout.deployment_id)
    return dataclasses.replace(
        view,
        strategy=state.rollout.strategy,
        running=ours.running_count if ours else view.running,
        desired=ours.desired_count if ours else view.desired,
        status=found.status if found else (ours.rollout_state if ours else view.status),
        stage=found.lifecycle_stage or None if found else view.stage,
        service_deployment=found.arn if found else view.service_deployment,
        failed_tasks=found.failed_tasks if found else view.failed_tasks,
        alarms_triggered=found.alarms_triggered if found else view.alarms_triggered,
    )
