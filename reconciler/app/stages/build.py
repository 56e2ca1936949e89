"""Build: the image of the desired commit, from its tree in the mirror, on the Docker engine.

Bounded by the daemon's build slots. A failed build counts towards the revision's
MAX_BUILD_ATTEMPTS and is recorded with its last output lines; an engine that cannot be
reached is transient and counts for nothing.
"""

from __future__ import annotations

import time

import structlog

from reconciler.adapters.values import BuildRequest
from reconciler.app.stages.context import PassContext
from reconciler.decisions.model import Phase, Result
from reconciler.decisions.plan import MAX_BUILD_ATTEMPTS
from reconciler.decisions.repourl import redact_url
from reconciler.errors import BuildFailed

log = structlog.get_logger("reconciler.pass")


async def build(ctx: PassContext) -> None:
    app, io, revision = ctx.app, ctx.io, ctx.revision
    image = str(ctx.observed.desired.image)
    async with ctx.session.build_slots:
        ctx.report.phase(Phase.BUILDING)
        log.info("build_started", image=image)
        began = time.monotonic()
        context = None
        try:
            # A context that cannot be sent (too big, a bad .dockerignore) is a failed build
            # of the revision like any other.
            context = await io.git.export_context(
                ctx.session.source, commit=revision, context=app.context, dockerfile=app.dockerfile
            )
            request = BuildRequest(
                dockerfile=app.dockerfile,
                tag=image,
                build_args=app.build_args,
                target=app.target,
                labels={
                    "org.opencontainers.image.revision": revision,
                    "org.opencontainers.image.source": redact_url(app.repo),
                },
                cache_from=_cache_sources(ctx),
                cache_auth=await io.ecr.auth(),
            )
            result = await io.docker.build(context, request)
        except BuildFailed as exc:
            await _count_failure(ctx, exc)
            raise
        finally:
            if context is not None:
                context.close()
    ctx.report.build_took(time.monotonic() - began)
    log.info(
        "build_finished", image=image, image_id=result.image_id, cached_steps=result.cached_steps
    )


def _cache_sources(ctx: PassContext) -> list[str]:
    """The images this app runs now, which any host built and pushed: their inline build
    cache lets a host that never built the app reuse their layers."""
    desired = ctx.observed.desired.image
    running = {image for image in ctx.observed.live.images.values() if image != str(desired)}
    prefix = f"{desired.registry}/{desired.repository}:"
    return sorted(image for image in running if image.startswith(prefix))


async def _count_failure(ctx: PassContext, exc: BuildFailed) -> None:
    memory, revision = ctx.memory, ctx.revision
    memory.build_failures[revision] = memory.build_failures.get(revision, 0) + 1
    await ctx.session.save()
    tail = "\n".join(exc.log_tail[-10:])
    await ctx.report.outcome(
        revision=revision,
        result=Result.BUILD_FAILED,
        started_at=ctx.started_at,
        error=f"{exc}\n{tail}".strip(),
    )
    if memory.build_failures[revision] >= MAX_BUILD_ATTEMPTS:
        ctx.report.phase(Phase.FAILED)
