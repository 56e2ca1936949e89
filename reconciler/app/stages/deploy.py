"""Register, then update: a task definition that changes only the image, then UpdateService.

The attempt (revision, registered task definition, what ran before, when) is written to the
app's state before UpdateService, and after it the deployment id with the service deployment
record ECS names in its answer (where it names one, the watch need not look for it). A pass
that later finds the attempt, with the revision neither live nor rolling out, knows it failed
unwatched and holds it; if the attempt cannot be written, UpdateService is not sent.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from reconciler.app.host import this_host
from reconciler.app.stages.context import PassContext, Registration
from reconciler.app.stages.supersede import superseded
from reconciler.app.stages.watch import Rollout
from reconciler.decisions.housekeeping import APP_TAG
from reconciler.decisions.model import Attempt, Live, Phase
from reconciler.errors import StateUnwritable, TransientError

log = structlog.get_logger("reconciler.pass")


def with_image(definition: Mapping[str, Any], containers: set[str], image: str) -> dict[str, Any]:
    """A copy of `definition` with only the managed containers' images changed."""
    result = copy.deepcopy(dict(definition))
    for container in result.get("containerDefinitions", []):
        if container.get("name") in containers:
            container["image"] = image
    return result


@dataclass(frozen=True)
class Registered:
    """The task definition registered for the desired image, and what ran before it."""

    arn: str
    previous: str


async def register(ctx: PassContext) -> Registered | None:
    """A task definition that differs from the live one only in the managed images; None
    when a newer revision turned up first."""
    live, image = ctx.observed.live, str(ctx.observed.desired.image)
    if ctx.definition is not None:
        # The files say everything: the live task definition is not copied.
        definition = dict(ctx.definition.task_definition)
        tags = list(definition.pop("tags", None) or [])
    else:
        template, tags = await ctx.io.ecs.task_definition(live.task_definition)
        definition = with_image(template, set(live.images), image)
    # A webhook since the last look at git may announce a newer revision: drop the older
    # one before it leaves any trace in ECS.
    if ctx.session.nudges.since_resolve and await superseded(ctx):
        return None
    with ctx.report.stage("register"):
        arn = await _register(ctx, live.task_definition, definition, tags, image)
    return Registered(arn=arn, previous=_previous(live))


async def update(ctx: PassContext, registered: Registered) -> Rollout | None:
    """Start the rollout of `registered`; None when a newer revision turned up first."""
    session, io = ctx.session, ctx.io
    arn, previous = registered.arn, registered.previous
    ctx.report.phase(Phase.DEPLOYING)
    # A webhook since the last look at git may announce a newer revision: this is the last
    # point where the older one can be dropped without ever reaching the service.
    if session.nudges.since_resolve and await superseded(ctx):
        return None
    async with session.critical:
        attempt = await _record_attempt(ctx, arn, previous)
        try:
            started = await io.ecs.update_service(
                cluster=ctx.app.cluster,
                service=ctx.app.service,
                task_definition=arn,
                settings=ctx.definition.service if ctx.definition is not None else None,
            )
        except TransientError:
            raise  # the registration is reused by the retry
        except BaseException:
            session.registration = None
            raise
        session.registration = None
        deployment_id = started.deployment_id
        ctx.memory.attempt = dataclasses.replace(
            attempt, deployment_id=deployment_id, service_deployment=started.service_deployment
        )
        # Best effort: the attempt alone already says UpdateService may be out.
        await session.save()
    ctx.report.service_updated(kind="deploy")
    log.info(
        "service_updated",
        task_definition=arn,
        deployment=deployment_id,
        service_deployment=started.service_deployment,
        previous=previous,
    )
    return Rollout(
        deployment_id=deployment_id,
        task_definition=arn,
        previous=previous,
        since=attempt.at,
        service_deployment=started.service_deployment,
    )


def with_app_tag(tags: list[Any], app: str) -> list[Any]:
    """The live definition's tags plus `reconciler:app = <app>`: housekeeping deregisters
    only task definitions that carry it, so those registered by hand are never touched."""
    kept = [t for t in tags if t.get("key") != APP_TAG]
    return [*kept, {"key": APP_TAG, "value": app}]


def _previous(live: Live) -> str:
    """What to roll back to: the settled task definition, not one still rolling out."""
    stable = live.service.previous_task_definition if live.service.in_flight else None
    return stable or live.task_definition


async def _register(
    ctx: PassContext, live_arn: str, definition: dict[str, Any], tags: list[Any], image: str
) -> str:
    session = ctx.session
    fingerprint = ctx.definition.fingerprint if ctx.definition is not None else ""
    known = session.registration
    if known is not None and (known.live, known.image, known.definition) == (
        live_arn,
        image,
        fingerprint,
    ):
        # Registered by an earlier pass (one waiting for approval, say): its phase stands.
        ctx.registered_definition = fingerprint or None
        return known.arn
    ctx.report.phase(Phase.DEPLOYING)
    arn = await ctx.io.ecs.register_task_definition(definition, with_app_tag(tags, ctx.app.name))
    session.registration = Registration(live=live_arn, image=image, arn=arn, definition=fingerprint)
    ctx.registered_definition = fingerprint or None
    log.info(
        "task_definition_registered",
        task_definition=arn,
        image=image,
        definition=fingerprint or None,
    )
    return arn


async def _record_attempt(ctx: PassContext, arn: str, previous: str) -> Attempt:
    memory = ctx.memory
    before = memory.attempt
    attempt = Attempt(
        revision=ctx.revision,
        task_definition=arn,
        previous=previous,
        config_fingerprint=ctx.app.fingerprint(),
        host=this_host(),
    )
    memory.attempt = attempt
    if not await ctx.session.save():
        memory.attempt = before
        raise StateUnwritable(
            f"not deploying {ctx.revision[:12]}: {ctx.session.store.write_error(ctx.app.name)}"
        )
    return attempt
