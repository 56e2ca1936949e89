"""A release of several services (SPEC 20): once the app's first service runs the revision,
the others follow in the order of `services`, each rollout awaited before the next starts.

The first service goes through the pipeline as an app of one service always did (plan,
build, pre-deploy, attempt, watch, hold). This stage carries the rest: for each further
service, its own task definition family (a copy of its live task definition with the
managed images changed or, with `definitions`, `<definitions>/<service>/`), registered,
recorded in the app's memory (memory.release) before its UpdateService, then watched.

When one fails, every service this release changed is put back on what it ran before (the
failed one last of all unless ECS rolled it back itself), in reverse order, and the
revision is held as one release: one outcome in history. What is owed is written before
the first rollback goes out, so a daemon killed in between pays the rest on its next pass.
A daemon killed between two services finds the first in sync on restart and goes on with
the next; one killed during a service's rollout finds the record and awaits that rollout,
or, when ECS no longer runs it, fails the release (and rolls back) as if it had watched.
"""

from __future__ import annotations

import dataclasses
import enum
import posixpath
from typing import Any

import structlog

from reconciler.app.host import this_host
from reconciler.app.stages.context import PassContext
from reconciler.app.stages.definitions import compared, desired_definition
from reconciler.app.stages.deploy import with_app_tag, with_image
from reconciler.app.stages.observe import managed_images
from reconciler.app.stages.rollback import put_back
from reconciler.app.stages.schedules import KIND, move_schedules
from reconciler.app.stages.schedules import put_back as put_back_schedule
from reconciler.app.stages.watch import Rollout, Watched, watch
from reconciler.config import AppConfig
from reconciler.decisions.definitions import DesiredDefinition
from reconciler.decisions.model import (
    Hold,
    Live,
    Phase,
    Release,
    ReleasePart,
    Result,
    ServiceState,
    utcnow,
)
from reconciler.decisions.schedules import family_of
from reconciler.errors import AwsRejected, DefinitionError, ManifestError, StateUnwritable

log = structlog.get_logger("reconciler.pass")


class Went(enum.Enum):
    """How the rest of a release went in this pass."""

    ALREADY = "already"  # every service ran the revision: nothing done
    DEPLOYED = "deployed"  # at least one service was moved now, all run it
    FAILED = "failed"  # held, and what it changed put back
    SUPERSEDED = "superseded"  # a newer revision turned up: its release moves them all


def for_service(app: AppConfig, service: str) -> AppConfig:
    """The app as one of its services sees it: with several services, its `definitions`
    are the folder `<definitions>/<service>`."""
    if not app.releases_parts or not app.definitions:
        return app
    folder = posixpath.normpath(posixpath.join(app.definitions, service))
    return app.model_copy(update={"definitions": folder})


async def service_definition(ctx: PassContext, service: str) -> DesiredDefinition:
    """`service`'s definition (`<definitions>/<service>/`) of the pass's revision, rendered
    for the image the pass deploys; the app has `definitions`."""
    rendered = await desired_definition(
        for_service(ctx.app, service),
        git=ctx.io.git,
        lookups=ctx.io.lookups,
        revision=ctx.revision,
        image=str(ctx.observed.desired.image),
    )
    assert rendered is not None
    return rendered


def note_first(ctx: PassContext, rollout: Rollout | None) -> Release:
    """The release of this pass's revision as memory has it, with what the first service
    ran before (from its rollout, or the attempt a restart found)."""
    app, memory = ctx.app, ctx.memory
    release = memory.release
    if (
        release is None
        or release.revision != ctx.revision
        or release.config_fingerprint != app.fingerprint()
    ):
        release = Release(revision=ctx.revision, config_fingerprint=app.fingerprint())
    first = release.part(app.service)
    if first.done:
        return release
    attempt = memory.attempt
    if rollout is not None:
        first = dataclasses.replace(
            first, previous=rollout.previous, task_definition=rollout.task_definition
        )
    elif attempt is not None and attempt.revision == ctx.revision:
        first = dataclasses.replace(
            first, previous=attempt.previous, task_definition=attempt.task_definition
        )
    return release.with_part(dataclasses.replace(first, done=True))


def held(ctx: PassContext) -> str | None:
    """Why the release of this pass's revision is held (it failed), or None."""
    hold = ctx.memory.hold
    if (
        hold is not None
        and hold.revision == ctx.revision
        and hold.config_fingerprint == ctx.app.fingerprint()
    ):
        return f"revision {hold.revision[:12]} failed: {hold.reason}"
    return None


async def rest_of_release(ctx: PassContext, *, first: Rollout | None) -> Went:
    """Every service after the first, in order, on the revision; the first runs it now."""
    app = ctx.app
    if not app.release_follows:
        return Went.ALREADY
    release = note_first(ctx, first)
    went = Went.ALREADY
    live = first.task_definition if first is not None else ctx.observed.live.task_definition
    ctx.report.part(app.service, task_definition=live, phase=Phase.IN_SYNC)
    for service in app.service_names[1:]:
        part = release.part(service)
        try:
            ended, part = await _part(ctx, release, part)
        except (AwsRejected, DefinitionError, ManifestError) as exc:
            # What retrying does not fix (AccessDenied, a definition that cannot be made)
            # fails the release with the services before it still on the revision: they
            # go back, rather than the release standing half-done until someone looks.
            log.error("release_part_refused", service=service, error=str(exc))
            await _failed(ctx, ctx.memory.release or release, service, Watched(reason=str(exc)))
            return Went.FAILED
        release = release.with_part(part)
        if ended is None:
            ctx.report.part(service, task_definition=part.task_definition, phase=Phase.IN_SYNC)
            continue
        if ended.superseded:
            await _remember(ctx, release)
            return Went.SUPERSEDED
        if not ended.succeeded:
            await _failed(ctx, release, service, ended)
            return Went.FAILED
        release = release.with_part(dataclasses.replace(part, done=True))
        await _remember(ctx, release)
        ctx.report.part(service, task_definition=part.task_definition, phase=Phase.IN_SYNC)
        went = Went.DEPLOYED
    if ctx.memory.release != release:
        await _remember(ctx, release)
    if app.definitions:
        await _report_drift(ctx)
    if app.schedules and not release.schedules_done:
        # Every service runs the revision: the scheduled tasks follow.
        running = [live, *(release.part(s).task_definition for s in app.service_names[1:])]
        new = {family_of(arn): arn for arn in running if arn}
        refused = await move_schedules(ctx, release, new)
        if refused is not None:
            release = ctx.memory.release or release
            await _failed(ctx, release, refused.schedule, Watched(reason=refused.reason))
            return Went.FAILED
    return went


async def _part(
    ctx: PassContext, release: Release, part: ReleasePart
) -> tuple[Watched | None, ReleasePart]:
    """Bring one service onto the revision: None when it runs it already, else how its
    rollout (started now, or found in flight) ended."""
    app, service = ctx.app, part.service
    state = await ctx.io.ecs.describe_service(app.cluster, service)
    definition, tags = await ctx.io.ecs.task_definition(state.task_definition)
    live = Live(service=state, images=managed_images(app, definition))
    image = str(ctx.observed.desired.image)
    settled = not state.in_flight and (
        state.primary is None or state.primary.task_definition == state.task_definition
    )
    if part.task_definition is not None and not part.done:
        # Sent by a daemon that did not see it through (a restart): await it, or find it
        # gone, as the first service's attempt is.
        if state.task_definition == part.task_definition and state.in_flight:
            return await watch(ctx, _rollout_of(part, state)), part
        if state.task_definition == part.task_definition:
            return Watched(succeeded=True), part
        if part.deployment_id is not None or _listed(state, part.task_definition):
            return Watched(
                reason=(
                    f"rolled back while not watched: {service} does not run "
                    f"{part.task_definition} (it runs {state.task_definition})"
                )
            ), part
    if live.runs(ctx.observed.desired.image) and settled:
        if part.task_definition is None:  # ran it already: what it runs, for the schedules
            part = dataclasses.replace(part, task_definition=state.task_definition, done=True)
        return None, part
    if live.runs(ctx.observed.desired.image) and state.primary is not None:
        # Rolling out already (someone else's deploy of this image): await it.
        part = ReleasePart(
            service,
            previous=state.previous_task_definition,
            task_definition=state.task_definition,
            deployment_id=state.primary.id,
            at=utcnow(),
            host=this_host(),
        )
        await _remember(ctx, release.with_part(part))
        return await watch(ctx, _rollout_of(part, state)), part
    ctx.report.part(service, task_definition=state.task_definition, phase=Phase.DEPLOYING)
    wanted, settings = await _definition(
        ctx, service, live_definition=definition, tags=tags, live=live, image=image
    )
    arn = await ctx.io.ecs.register_task_definition(*wanted)
    log.info("task_definition_registered", service=service, task_definition=arn, image=image)
    part = ReleasePart(
        service,
        previous=_previous(state),
        task_definition=arn,
        at=utcnow(),
        host=this_host(),
    )
    async with ctx.session.critical:
        release = release.with_part(part)
        if not await _remember(ctx, release):
            raise StateUnwritable(
                f"not deploying {ctx.revision[:12]} to {service}: "
                f"{ctx.session.store.write_error(app.name)}"
            )
        started = await ctx.io.ecs.update_service(
            cluster=app.cluster, service=service, task_definition=arn, settings=settings
        )
        part = dataclasses.replace(
            part,
            deployment_id=started.deployment_id,
            service_deployment=started.service_deployment,
        )
        await _remember(ctx, release.with_part(part))
    ctx.report.service_updated(kind="deploy")
    log.info("service_updated", service=service, task_definition=arn, previous=part.previous)
    return await watch(ctx, _rollout_of(part, state)), part


async def _definition(
    ctx: PassContext,
    service: str,
    *,
    live_definition: dict[str, Any],
    tags: list[Any],
    live: Live,
    image: str,
) -> tuple[tuple[dict[str, Any], list[Any]], dict[str, Any] | None]:
    """What to register for `service` (and its service settings, with `definitions`)."""
    app = ctx.app
    if app.definitions:
        rendered = await service_definition(ctx, service)
        definition = dict(rendered.task_definition)
        own_tags = list(definition.pop("tags", None) or [])
        return (definition, with_app_tag(own_tags, app.name)), dict(rendered.service)
    copied = with_image(live_definition, set(live.images), image)
    return (copied, with_app_tag(tags, app.name)), None


async def _report_drift(ctx: PassContext) -> None:
    """Drift of every service (the later ones named in each line): what runs differs from
    the service's files of the revision it runs, which only a hand outside the daemon does.
    The later services' drift is shown, never healed."""
    app = ctx.app
    first = ctx.observed.definition
    changes = list(first.changes) if first is not None and first.drifted else []
    later: list[str] = []
    for service in app.service_names[1:]:
        state = await ctx.io.ecs.describe_service(app.cluster, service)
        if state.in_flight:
            continue
        live, tags = await ctx.io.ecs.task_definition(state.task_definition)
        wanted = await service_definition(ctx, service)
        found = compared(wanted, state, live, tags, mark=None, heal=False)
        named = [dataclasses.replace(c, path=f"{service}: {c.path}") for c in found.changes]
        later += [c.path for c in named]
        changes += named
    if later:
        log.warning("drift", fields=later)
    ctx.report.drift(changes)


def _rollout_of(part: ReleasePart, state: ServiceState) -> Rollout:
    assert part.task_definition is not None
    primary = state.primary
    return Rollout(
        deployment_id=part.deployment_id or (primary.id if primary else ""),
        task_definition=part.task_definition,
        previous=part.previous,
        since=part.at or utcnow(),
        service_deployment=part.service_deployment,
        timed_here=part.host in ("", this_host()),
        service=part.service,
    )


def _listed(state: ServiceState, task_definition: str) -> bool:
    return any(d.task_definition == task_definition for d in state.deployments)


def _previous(state: ServiceState) -> str:
    """What to roll back to: the settled task definition, not one still rolling out."""
    stable = state.previous_task_definition if state.in_flight else None
    return stable or state.task_definition


async def _remember(ctx: PassContext, release: Release) -> bool:
    ctx.memory.release = release
    return await ctx.session.save()


async def _failed(ctx: PassContext, release: Release, service: str, ended: Watched) -> None:
    """Hold the release and put back every service it changed."""
    app, memory = ctx.app, ctx.memory
    reason = f"release of {', '.join(app.service_names)}: {service}: {ended.reason}"
    log.error("release_failed", service=service, reason=ended.reason)
    owed = _owed(release, service, ended) if app.rollback else []
    # Held before the first rollback goes out: a daemon killed in between finds the hold
    # (never deploys the revision again) and the rollbacks still owed.
    memory.hold = Hold(revision=ctx.revision, reason=reason, config_fingerprint=app.fingerprint())
    memory.attempt = None
    await _remember(ctx, dataclasses.replace(release, owed=tuple(owed)))
    if service in app.schedules:
        ctx.report.part(service, task_definition=None, phase=Phase.FAILED, kind=KIND)
    else:
        failed_part = release.part(service)
        ctx.report.part(service, task_definition=failed_part.task_definition, phase=Phase.FAILED)
    ctx.report.failed(reason)
    result = Result.ROLLED_BACK if owed or ended.rolled_back_by_ecs else Result.FAILED
    try:
        not_back = await pay_owed(ctx)
    except BaseException:
        result = Result.FAILED  # AWS down: the rollbacks stay owed to the next pass
        raise
    else:
        if not_back:
            result = Result.ROLLBACK_FAILED
            reason += f"; the rollback of {', '.join(not_back)} failed too"
            log.error("rollback_failed", failed_revision=ctx.revision, services=not_back)
    finally:
        ctx.report.failed(reason)
        await ctx.report.outcome(
            revision=ctx.revision, result=result, started_at=ctx.started_at, error=reason
        )
    if result in {Result.ROLLED_BACK, Result.ROLLBACK_FAILED}:
        ctx.report.rolled_back(outcome=result.value)
    ctx.report.count(result.value)


def _owed(release: Release, failed: str, ended: Watched) -> list[str]:
    """What to put back, in order: the schedules (moved last, so first back), then every
    service the release changed, in reverse order (the failed one unless ECS did it)."""
    owed: list[str] = []
    for move in reversed(release.schedules):
        if move.schedule not in owed:
            owed.append(move.schedule)
    for part in reversed(release.parts):
        if part.previous is None or part.previous == part.task_definition:
            continue  # this release did not change it
        if part.service == failed and ended.rolled_back_by_ecs:
            continue
        owed.append(part.service)
    return owed


async def pay_owed(ctx: PassContext) -> list[str]:
    """Put back, in order, every service a failed release still owes a rollback, each
    watched to its end; the services whose rollback did not complete. A rollback is paid
    once its UpdateService is out (whatever its rollout does after, as for one service)."""
    failed: list[str] = []
    while (release := ctx.memory.release) is not None and release.owed:
        service = release.owed[0]
        if service in {move.schedule for move in release.schedules}:
            await put_back_schedule(ctx, service)
            await _remember(ctx, dataclasses.replace(release, owed=release.owed[1:]))
            continue
        part = release.part(service)
        assert part.previous is not None
        started = await put_back(ctx, service, part.previous)
        await _remember(ctx, dataclasses.replace(release, owed=release.owed[1:]))
        ctx.report.part(service, task_definition=part.previous, phase=Phase.FAILED)
        if started is None:
            continue
        ended = await watch(
            ctx,
            Rollout(
                deployment_id=started.deployment_id,
                task_definition=part.previous,
                previous=None,
                since=utcnow(),
                service_deployment=started.service_deployment,
                service=service,
            ),
            kind="rollback",
            supersedable=False,
        )
        if not ended.succeeded:
            failed.append(service)
    ctx.report.phase(Phase.FAILED)
    return failed
