"""Push: the built image to the registry, with fresh ECR credentials; beside it, the test
stage's image under the app's cache tag (build.cache_image), so that a build host that never
built the app finds the test stage's layers in the registry.

The cache image is a convenience: when it cannot be tagged or pushed (a repository whose
tags are immutable, the registry refusing it) that is said in the log and the deploy goes on.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from reconciler.adapters.registry import RegistryAuth
from reconciler.aio.tasks import stop
from reconciler.app.stages.build import TestStage, cache_image
from reconciler.app.stages.context import PassContext
from reconciler.decisions.model import Phase
from reconciler.errors import ReconcilerError

log = structlog.get_logger("reconciler.pass")


async def push(ctx: PassContext, stage: TestStage | None = None) -> None:
    """Push the desired image, and the test stage `stage` (when it built) as cache."""
    image = str(ctx.observed.desired.image)
    ctx.report.phase(Phase.PUSHING)
    began = time.monotonic()
    auth = await ctx.io.ecr.auth()
    cache = cache_image(ctx)
    beside = None
    if stage is not None and stage.failure is None and cache is not None:
        beside = asyncio.create_task(_push_cache(ctx, stage.image, cache, auth=auth))
    try:
        digest = await ctx.io.docker.push(image, auth=auth)
    except BaseException:
        if beside is not None:
            await stop(beside)
        raise
    log.info("push_finished", image=image, digest=digest, seconds=_since(began))
    if beside is not None:
        await beside
    ctx.report.push_took(time.monotonic() - began)


async def _push_cache(ctx: PassContext, local: str, cache: str, *, auth: RegistryAuth) -> None:
    began = time.monotonic()
    try:
        await ctx.io.docker.tag(local, cache)
        digest = await ctx.io.docker.push(cache, auth=auth)
    except ReconcilerError as exc:
        log.warning("cache_push_failed", image=cache, error=str(exc))
        return
    log.info("cache_pushed", image=cache, digest=digest, seconds=_since(began))


def _since(began: float) -> float:
    return round(time.monotonic() - began, 3)
