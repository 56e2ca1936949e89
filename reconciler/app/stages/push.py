"""Push: the built image to the registry, with fresh ECR credentials."""

from __future__ import annotations

import time

import structlog

from reconciler.app.stages.context import PassContext
from reconciler.decisions.model import Phase

log = structlog.get_logger("reconciler.pass")


async def push(ctx: PassContext) -> None:
    image = str(ctx.observed.desired.image)
    ctx.report.phase(Phase.PUSHING)
    began = time.monotonic()
    digest = await ctx.io.docker.push(image, auth=await ctx.io.ecr.auth())
    ctx.report.push_took(time.monotonic() - began)
    log.info("push_finished", image=image, digest=digest)
