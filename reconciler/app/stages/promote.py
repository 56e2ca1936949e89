"""Promote: copy the image the source app proved into this app's repository, through the
registry API (a cross-repository mount where both are in one registry), instead of building
it: no build and no test run twice. The digest is the one that ran in the source."""

from __future__ import annotations

import time

import structlog

from reconciler.app.stages.context import PassContext
from reconciler.decisions.model import Phase

log = structlog.get_logger("reconciler.pass")


async def promote(ctx: PassContext) -> None:
    source = ctx.session.promotion
    assert source is not None, "only a promoted app promotes"
    target = ctx.observed.desired.image
    ctx.report.phase(Phase.PUSHING)
    began = time.monotonic()
    digest = await ctx.io.registry.copy(
        source_registry=await source.io.ecr.registry(),
        source_repository=source.app.ecr_repository,
        tag=ctx.revision,
        target_registry=target.registry,
        target_repository=target.repository,
        source_auth=await source.io.ecr.auth(),
        target_auth=await ctx.io.ecr.auth(),
    )
    ctx.report.push_took(time.monotonic() - began)
    log.info("image_promoted", source_app=source.app.name, image=str(target), digest=digest)
