"""Push: the built image to the registry, with fresh ECR credentials; and the test stage's
image under the app's cache tag (build.cache_image), pushed once its test passed, so that a
build host that never built the app finds the test stage's layers in the registry.

The cache image is a convenience: when it cannot be tagged or pushed (a repository whose
tags are immutable, the registry refusing it) that is said in the log and the deploy goes on.
"""

from __future__ import annotations

import time

import structlog

from reconciler.app.stages.build import cache_image
from reconciler.app.stages.context import PassContext
from reconciler.decisions.model import Phase
from reconciler.errors import ReconcilerError

log = structlog.get_logger("reconciler.pass")


async def push(ctx: PassContext) -> None:
    image = str(ctx.observed.desired.image)
    ctx.report.phase(Phase.PUSHING)
    began = time.monotonic()
    digest = await ctx.io.docker.push(image, auth=await ctx.io.ecr.auth())
    seconds = time.monotonic() - began
    ctx.report.push_took(seconds)
    log.info("push_finished", image=image, digest=digest, seconds=round(seconds, 3))


async def keep_as_cache(ctx: PassContext, local: str) -> None:
    """Tag the local test stage image `local` as the app's cache image and push it; a
    failure is a warning (LeaseNotHeld included: the next deploy pushes it again)."""
    cache = cache_image(ctx)
    if cache is None:
        return
    began = time.monotonic()
    try:
        await ctx.io.docker.tag(local, cache)
        digest = await ctx.io.docker.push(cache, auth=await ctx.io.ecr.auth())
    except ReconcilerError as exc:
        log.warning("cache_push_failed", image=cache, error=str(exc))
        return
    seconds = round(time.monotonic() - began, 3)
    log.info("cache_pushed", image=cache, digest=digest, seconds=seconds)
