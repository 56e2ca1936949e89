"""Build: the image of the desired commit, from its tree in the mirror, on the Docker engine.

Bounded by the daemon's build slots. A failed build counts towards the revision's
MAX_BUILD_ATTEMPTS and is recorded with its last output lines; an engine that cannot be
reached is transient and counts for nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import BinaryIO

import structlog

from reconciler.adapters.docker import BuildResult, SecretsNeedBuildKit
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
    secrets = await read_secrets(ctx)
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
                secrets=secrets,
            )
            result = await build_image(ctx, context, request)
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


async def read_secrets(ctx: PassContext) -> Mapping[str, bytes]:
    """The app's build secrets, read now (with its own AWS identity) for one build."""
    if not ctx.app.build_secrets:
        return {}
    return await ctx.io.secrets.read(ctx.app.build_secrets)


async def build_image(ctx: PassContext, context: BinaryIO, request: BuildRequest) -> BuildResult:
    """`request` built on the engine; a build whose secrets the engine's builder cannot mount
    needs a human, and says which app."""
    try:
        return await ctx.io.docker.build(context, request)
    except SecretsNeedBuildKit as exc:
        raise SecretsNeedBuildKit(f"app {ctx.app.name}: {exc}") from exc


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
