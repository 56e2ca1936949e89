"""Push: the built image to the registry, with fresh ECR credentials; and the test stage's
image under the app's cache tag (build.cache_image), pushed once its test passed while the
deploy goes on, so that a build host that never built the app finds the test stage's layers
in the registry.

The cache image is a convenience: when it cannot be tagged or pushed (a repository whose
tags are immutable, the registry refusing it) that is said in the log and the deploy goes on.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from reconciler.app.stages.build import TestStage, cache_image
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


def keeping_as_cache(ctx: PassContext, stage: TestStage | None) -> asyncio.Task[None] | None:
    """The test stage's image on its way to the registry as the app's cache image, beside
    whatever the pass does next; None when there is none to push (no test stage, or its test
    was not run beside the build and passed)."""
    if stage is None or stage.failure is not None or stage.run is None or not stage.run.passed:
        return None
    return asyncio.create_task(keep_as_cache(ctx, stage.image), name="cache image")


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
