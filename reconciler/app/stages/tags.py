"""Extra tags: `latest` and friends moved to the image that runs, through the registry API.

Moved after a rollout succeeded (pins and rollbacks by pin included), never named in a task
definition. Idempotent: the state remembers which revision the tags name, so an in-sync pass
finishes a move that failed before (registry down) and otherwise asks nothing.
"""

from __future__ import annotations

import structlog

from reconciler.app.stages.context import PassContext
from reconciler.errors import ReconcilerError

log = structlog.get_logger("reconciler.pass")


async def move_extra_tags(ctx: PassContext) -> None:
    app, memory = ctx.app, ctx.memory
    if not app.extra_tags or memory.tagged == ctx.revision:
        return
    with ctx.report.stage("tags"):
        await _move(ctx)


async def _move(ctx: PassContext) -> None:
    app, memory = ctx.app, ctx.memory
    image = ctx.observed.desired.image
    try:
        auth = await ctx.io.ecr.auth()
        for tag in app.extra_tags:
            digest = await ctx.io.registry.retag(
                registry=image.registry,
                repository=image.repository,
                tag=image.tag,
                new_tag=tag,
                auth=auth,
            )
            log.info("extra_tag_moved", tag=tag, digest=digest)
    except ReconcilerError as exc:
        # The deploy itself succeeded; the next in-sync pass tries again.
        log.warning("extra_tags_not_moved", error=str(exc))
        return
    memory.tagged = ctx.revision
    await ctx.session.save()
