"""One pass of one app, as a pipeline of stages:

    (sync: clear the hold)  ->  pay a rollback still owed  ->  resolve the revision (git)
    ->  observe  ->  plan  ->  one of:
        in sync (-> extra tags) | suspended | held | roll back | failed unwatched
        | watch a rollout in flight
        | frozen (a freeze window: no new release starts)
        | [verify ->] [build (test stage beside: its test) -> test -> push (then the test
          stage as cache, beside the rest) ->] register -> [approval ->] pre-deploy task
          -> update service -> watch [beside it: analysis, from the bake or the rollout]
          -> (succeeded -> extra tags -> housekeeping [-> older local images removed]
              | hold and roll back)

An app of several services (`services`) runs that for its first; once the first runs the
revision (after its watch, or found in sync), the others follow in order (release.py), and
the release is deployed, or held and rolled back, as one.

A pass that deploys an image already in the registry skips build and test: that image passed
them when it was pushed.

Each stage lives in a module of its own beside this one; the decisions are pure (decisions/plan.py,
verdict.py). Errors leave a pass as the project's exceptions; the loop (app/loop.py) sorts them
into retry-with-backoff or wait.
"""

from __future__ import annotations

import enum
import functools

import structlog

from reconciler.aio.tasks import stop
from reconciler.app.host import this_host
from reconciler.app.stages.analysis import owed, previous_of, results_of, watched
from reconciler.app.stages.approval import approved, pauses_for_gates
from reconciler.app.stages.build import build
from reconciler.app.stages.commits import commit_time
from reconciler.app.stages.context import AppSession, PassContext
from reconciler.app.stages.definitions import desired_definition
from reconciler.app.stages.deploy import register, update
from reconciler.app.stages.freeze import frozen
from reconciler.app.stages.housekeeping import after_rollout
from reconciler.app.stages.lifecycle import gates_at_hook
from reconciler.app.stages.local_images import remove_old_local_images
from reconciler.app.stages.observe import desired_of, observe
from reconciler.app.stages.pre_deploy import pre_deploy
from reconciler.app.stages.promote import promote
from reconciler.app.stages.push import keeping_as_cache, push
from reconciler.app.stages.release import Went, for_service, held, pay_owed, rest_of_release
from reconciler.app.stages.resolve import desired_revision, pinned
from reconciler.app.stages.rollback import hold_failed, roll_back
from reconciler.app.stages.supersede import superseded
from reconciler.app.stages.tags import move_extra_tags
from reconciler.app.stages.test import run_beside, run_test
from reconciler.app.stages.verify import verified
from reconciler.app.stages.watch import Rollout, Watched, watch
from reconciler.decisions.analysis import State
from reconciler.decisions.model import (
    AwaitRollout,
    DefinitionMark,
    Deploy,
    FailedUnwatched,
    Held,
    HistoryEntry,
    Hold,
    InSync,
    Refused,
    ReportOnly,
    Result,
    RollBack,
    utcnow,
)
from reconciler.decisions.plan import plan
from reconciler.errors import StalledError

log = structlog.get_logger("reconciler.pass")
# How old a DescribeServices answer a polling pass may use (capped at half the interval): the
# apps of a cluster pass together, and the first one's calls carry their neighbours.
OBSERVE_MAX_AGE = 5.0


class Next(enum.Enum):
    """What the loop does after a pass."""

    WAIT = "wait"  # sleep poll_interval (or until nudged)
    RETRY = "retry"  # back off, then try again
    AGAIN = "again"  # start another pass at once (a newer revision turned up)


async def run_pass(session: AppSession, *, woken: bool, clear_hold: bool = False) -> Next:
    """One pass; `woken` when a nudge started it, `clear_hold` when an operator synced."""
    memory = session.memory
    session.report.pass_began()
    if clear_hold:
        if memory.hold or memory.attempt or memory.build_failures or memory.damaged:
            log.info("hold_cleared", revision=memory.hold.revision if memory.hold else None)
        memory = await session.store.reset(session.app.name)
    session.report.state_unwritable(session.store.write_error(session.app.name))
    if session.store.write_error(session.app.name):
        await session.save()  # the disk may have room again

    hold = memory.hold
    if hold is not None and hold.rollback_to:
        # A rollback owed after a failed rollout does not depend on git: pay it before
        # asking the remote, so an unreachable git server cannot keep a failed revision live.
        with structlog.contextvars.bound_contextvars(revision=hold.revision):
            await roll_back(PassContext(session, revision=hold.revision), hold.rollback_to)
    release = memory.release
    if release is not None and release.owed:
        # Likewise the rollbacks a failed release of several services still owes.
        with structlog.contextvars.bound_contextvars(revision=release.revision):
            await pay_owed(PassContext(session, revision=release.revision))

    revision = await desired_revision(session)
    pin = memory.pin if pinned(session) else None
    session.report.pinned(revision=pin.revision if pin else None, by=pin.by if pin else None)
    with structlog.contextvars.bound_contextvars(revision=revision):
        return await _reconcile(PassContext(session, revision=revision), woken=woken)


async def _reconcile(ctx: PassContext, *, woken: bool) -> Next:
    session, app = ctx.session, ctx.app
    desired = await desired_of(app, ctx.io, revision=ctx.revision)
    ctx.report.desired(revision=ctx.revision, image=str(desired.image))
    await commit_time(ctx)
    # With `definitions`, a file that does not render, parse or fit the API stops the pass
    # here (DefinitionError): nothing is written for the revision.
    ctx.definition = await desired_definition(
        for_service(app, app.service),
        git=ctx.io.git,
        lookups=ctx.io.lookups,
        revision=ctx.revision,
        image=str(desired.image),
    )
    # A nudged pass reads ECS afresh; a polling pass may use a neighbour's answer.
    max_age = 0.0 if woken else min(OBSERVE_MAX_AGE, session.poll_interval / 2)
    unwritable = session.store.write_error(app.name)
    ctx.observation = await observe(
        app,
        ctx.io,
        desired=desired,
        memory=ctx.memory,
        unwritable=unwritable,
        max_age=max_age,
        wanted=ctx.definition,
    )
    if max_age and not isinstance(plan(ctx.observation), InSync | ReportOnly | Held):
        # About to write: the copy must be of the task definition live now, not of one a few
        # seconds ago.
        ctx.observation = await observe(
            app,
            ctx.io,
            desired=desired,
            memory=ctx.memory,
            unwritable=unwritable,
            wanted=ctx.definition,
        )
    ctx.report.observed(ctx.observation)
    action = plan(ctx.observation)
    if ctx.definition is not None:
        state = ctx.observation.definition
        ctx.report.drift(state.changes if state is not None and state.drifted else ())

    match action:
        case ReportOnly():
            ctx.report.suspended()
            return Next.WAIT
        case Refused(reason=reason):
            raise StalledError(reason)
        case InSync(drift=drift):
            return await _in_sync(ctx, drift)
        case RollBack(task_definition=previous):
            await roll_back(ctx, previous)
            return Next.WAIT
        case Held(reason=reason, transient=transient):
            # The reporter adds why the state cannot be written, if it cannot.
            ctx.report.held(_with_build_output(reason, ctx))
            return Next.RETRY if transient else Next.WAIT
        case FailedUnwatched(reason=reason):
            return await _failed_unwatched(ctx, reason)
        case AwaitRollout():
            log.info("rollout_in_flight_found", deployment=action.deployment_id)
            rollout = Rollout(
                deployment_id=action.deployment_id,
                task_definition=action.task_definition,
                previous=action.previous_task_definition,
                since=action.since or utcnow(),
                service_deployment=action.service_deployment,
                # Another host's stamp is shown, never compared with this host's clock.
                timed_here=action.since is None or action.since_host == this_host(),
            )
            return await _watch(ctx, rollout)
        case Deploy(build=needs_build, heal=heal):
            if frozen(ctx):
                return Next.WAIT
            if heal and ctx.observed.definition is not None:
                log.warning("drift_healing", fields=list(ctx.observed.definition.fields))
            return await _deploy(ctx, needs_build=needs_build)
    raise AssertionError(f"unplanned action {action!r}")  # pragma: no cover


async def _in_sync(ctx: PassContext, drift: tuple[str, ...]) -> Next:
    went = await _analysed(ctx)
    if went is Went.FAILED:
        return Next.WAIT
    if ctx.app.release_follows:
        # The first service runs the revision: the others follow (a restart between two
        # services goes on here), unless the release failed and is held.
        reason = held(ctx)
        if reason is not None:
            ctx.report.held(reason)
            return Next.WAIT
        rest = await rest_of_release(ctx, first=None)
        if rest is Went.SUPERSEDED:
            return Next.AGAIN
        if rest is Went.FAILED:
            return Next.WAIT
        if rest is Went.DEPLOYED:
            went = rest
    # The attempt stays: a restarted daemon can find a rollout in sync that ECS may still
    # roll back (an alarm during its bake); the attempt then tells it so.
    await _settled(ctx, keep_attempt=True)
    if went is Went.DEPLOYED:
        await ctx.report.outcome(
            revision=ctx.revision,
            result=Result.DEPLOYED,
            started_at=ctx.started_at,
            error=None,
            analysis=results_of(ctx),
        )
    if drift:
        log.warning("drift", fields=list(drift))
    else:
        await _mark_definition(ctx, ctx.observed.live.task_definition)
    await move_extra_tags(ctx)
    if went is Went.DEPLOYED:
        ctx.report.deployed()
    else:
        ctx.report.in_sync()
    return Next.WAIT


async def _analysed(ctx: PassContext) -> Went:
    """A release found live whose analysis is unfinished (a restart or a takeover during
    it) is measured to its verdict now (DEPLOYED when it passed; FAILED, held and rolled
    back, when not); one whose analysis failed with rollback = false stays held (FAILED);
    ALREADY when nothing was owed."""
    verdict = await owed(ctx)
    if verdict is None:
        return Went.ALREADY
    if verdict.state is State.PASSED:
        return Went.DEPLOYED  # its verdict is given now: the release's outcome with it
    reason = held(ctx)
    if reason is not None:
        ctx.report.held(reason)
    else:
        await hold_failed(ctx, Watched(reason=verdict.reason), previous=previous_of(ctx))
    return Went.FAILED


async def _deploy(ctx: PassContext, *, needs_build: bool) -> Next:
    # What the definition names must exist before anything is built or written for it.
    with ctx.report.stage("verify"):
        await verified(ctx)
    built = needs_build and ctx.session.promotion is None
    cache = None
    if needs_build and not built:
        await promote(ctx)
    elif built:
        # The test stage's test runs beside the production build, as soon as it is built.
        tested = await build(ctx, then=functools.partial(run_beside, ctx))
        if not await run_test(ctx, tested):
            return Next.WAIT
        await push(ctx)
        # The test stage goes to the registry as the app's cache image while the deploy goes
        # on: a deploy never waits for it. Only now, so the layers both images share go up
        # once, with the image the deploy needs.
        cache = keeping_as_cache(ctx, tested)
    try:
        outcome = await _roll_out(ctx, built=built)
    except BaseException:
        if cache is not None:
            await stop(cache)
        raise
    if cache is not None:
        await cache
    return outcome


async def _roll_out(ctx: PassContext, *, built: bool) -> Next:
    # A newer commit may have landed while we built. Never deploy an older revision after a
    # newer one: if the desired revision moved, start over.
    if built and await superseded(ctx):
        return Next.AGAIN
    registered = await register(ctx)
    if registered is None:
        return Next.AGAIN
    if not await approved(ctx):
        return Next.WAIT
    if not await pre_deploy(ctx, task_definition=registered.arn):
        return Next.WAIT
    started = await update(ctx, registered)
    if started is None:
        return Next.AGAIN
    # What ran before this rollout, as observed before it started: its images stay.
    ran_before = list(ctx.observed.live.images.values()) if built else None
    return await _watch(ctx, started, ran_before=ran_before)


async def _watch(
    ctx: PassContext, rollout: Rollout, *, ran_before: list[str] | None = None
) -> Next:
    if pauses_for_gates(ctx):
        # The gates run where ECS stops the deployment for them, before production traffic.
        ended = await watch(ctx, rollout, at_hook=gates_at_hook(ctx, rollout))
    else:
        ended = await watched(ctx, rollout)
    if ended.superseded:
        return Next.AGAIN
    if ended.succeeded:
        went = await rest_of_release(ctx, first=rollout)
        if went is Went.SUPERSEDED:
            return Next.AGAIN
        if went is Went.FAILED:
            return Next.WAIT
        memory = ctx.memory
        memory.build_failures.pop(ctx.revision, None)
        if ctx.registered_definition is not None:
            await _mark_definition(ctx, rollout.task_definition)
            ctx.report.drift(())  # what runs now is the definition
        await _settled(ctx)
        await ctx.report.outcome(
            revision=ctx.revision,
            result=Result.DEPLOYED,
            started_at=ctx.started_at,
            error=None,
            analysis=results_of(ctx),
        )
        ctx.report.live(
            task_definition=rollout.task_definition, image=str(ctx.observed.desired.image)
        )
        # Moved before InSync is said, so whoever sees InSync finds `latest` on what runs.
        await move_extra_tags(ctx)
        ctx.report.deployed()
        await after_rollout(ctx, ctx.io.housekeeping, previous=rollout.previous)
        if ran_before is not None:
            await remove_old_local_images(ctx, previous=ran_before)
        return Next.WAIT
    await hold_failed(ctx, ended, previous=rollout.previous)
    return Next.WAIT


async def _mark_definition(ctx: PassContext, task_definition: str) -> None:
    """Remember that the definition of this pass is live in `task_definition`: from now on
    a difference from it is drift."""
    if ctx.definition is None:
        return
    mark = DefinitionMark(fingerprint=ctx.definition.fingerprint, task_definition=task_definition)
    if ctx.memory.definition != mark:
        ctx.memory.definition = mark
        await ctx.session.save()


async def _settled(ctx: PassContext, *, keep_attempt: bool = False) -> None:
    """The desired image is live: nothing is held (or, after a watched success, attempted)."""
    memory = ctx.memory
    drop_attempt = memory.attempt is not None and not keep_attempt
    if memory.hold is not None or drop_attempt or memory.build_failures:
        memory.hold = None
        if drop_attempt:
            memory.attempt = None
        memory.build_failures.clear()
        await ctx.session.save()


async def _failed_unwatched(ctx: PassContext, reason: str) -> Next:
    memory = ctx.memory
    log.error("rollout_failed_unwatched", reason=reason)
    memory.hold = Hold(
        revision=ctx.revision, reason=reason, config_fingerprint=ctx.app.fingerprint()
    )
    memory.attempt = None
    await ctx.session.save()
    await ctx.report.outcome(
        revision=ctx.revision, result=Result.FAILED, started_at=ctx.started_at, error=reason
    )
    ctx.report.failed(reason)
    ctx.report.count(Result.FAILED.value)
    return Next.WAIT


def _with_build_output(reason: str, ctx: PassContext) -> str:
    """The Held reason, with the output of the last failed build of the revision if it was one."""
    last: HistoryEntry | None = next(
        (h for h in ctx.memory.history if h.revision == ctx.revision), None
    )
    if last is not None and last.result is Result.BUILD_FAILED and last.error:
        return f"{reason}\n{last.error}"
    return reason
