"""Build: the image of the desired commit, from its tree in the mirror, on the Docker engine;
beside it, from the same export of the commit, the test stage (`test.target`) when the app's
test runs in one, and what the caller does with that stage once it is built (its test run).

Both builds run at once, within one of the daemon's build slots (given back once both are
built: the test stage's test run needs none): BuildKit does the steps the two stages share
once (the second build finds them in flight and waits for them). A failed
production build counts towards the revision's MAX_BUILD_ATTEMPTS and is recorded with its
last output lines, whatever the test stage did; a test stage that does not build holds the
revision at its test (test.py), as a failed test does. An engine that cannot be reached is
transient and counts for nothing.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import BinaryIO

import structlog

from reconciler.adapters.docker import BuildResult, SecretsNeedBuildKit
from reconciler.adapters.registry import RegistryAuth
from reconciler.adapters.sharedfile import SharedFile
from reconciler.adapters.values import BuildRequest
from reconciler.aio.places import Place
from reconciler.aio.tasks import stop
from reconciler.app.stages.context import PassContext
from reconciler.decisions.local_images import APP_LABEL
from reconciler.decisions.model import Phase, Result, TestRun
from reconciler.decisions.plan import MAX_BUILD_ATTEMPTS
from reconciler.decisions.repourl import redact_url
from reconciler.errors import BuildFailed

log = structlog.get_logger("reconciler.pass")
CACHE_PREFIX = "cache-"
# A Docker tag; a test target that makes no valid tag gets no cache image.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def stage_image(app: str, revision: str) -> str:
    """The local tag of a test stage's image."""
    return f"reconciler-test/{app}:{revision}"


def cache_image(ctx: PassContext) -> str | None:
    """Where the test stage's image is kept as build cache for every build host:
    `<registry>/<repository>:cache-<target>` in the app's own repository (its inline cache
    holds the test stage's layers, which the production image lacks: the dev dependencies).
    None without a test target, or for one no tag can be named after."""
    test = ctx.app.test
    if test is None or not test.target or not _TAG.fullmatch(CACHE_PREFIX + test.target):
        return None
    image = ctx.observed.desired.image
    return f"{image.registry}/{image.repository}:{CACHE_PREFIX}{test.target}"


@dataclass(frozen=True)
class TestStage:
    """The test stage built beside the production image: its local tag, or the failure that
    holds the revision at its test; and its test run, when one was made beside the build."""

    __test__ = False  # not a pytest test class

    image: str
    failure: BuildFailed | None = None
    run: TestRun | None = None


# What is done with the test stage once it is built, beside the rest of the production build.
Then = Callable[[TestStage], Awaitable[TestStage]]


async def build(ctx: PassContext, *, then: Then | None = None) -> TestStage | None:
    """Build the desired image (and the test stage, when the test has a target); the test
    stage's outcome, None without one. `then` is done with the test stage as soon as it is
    built (its test run: test.run_beside), while the production build goes on; what it
    returns is the outcome."""
    app, io, revision = ctx.app, ctx.io, ctx.revision
    image = str(ctx.observed.desired.image)
    secrets = await read_secrets(ctx)
    target = app.test.target if app.test is not None else ""
    async with Place(ctx.session.build_slots) as place:
        ctx.report.phase(Phase.BUILDING)
        log.info("build_started", image=image, test_target=target or None)
        context = None
        try:
            # A context that cannot be sent (too big, a bad .dockerignore) is a failed build
            # of the revision like any other.
            context = await io.git.export_context(
                ctx.session.source, commit=revision, context=app.context, dockerfile=app.dockerfile
            )
            common = _common(ctx, secrets=secrets, cache_auth=await io.ecr.auth())
            production = replace(common, tag=image, target=app.target)
            stage = replace(common, tag=stage_image(app.name, revision), target=target)
            result, seconds, tested = await _build_beside(
                ctx,
                context,
                production,
                stage if target else None,
                then=then,
                built=place.give_back,
            )
        except BuildFailed as exc:
            await _count_failure(ctx, exc)
            raise
        finally:
            if context is not None:
                context.close()
    ctx.report.build_took(seconds)
    log.info(
        "build_finished",
        image=image,
        image_id=result.image_id,
        cached_steps=result.cached_steps,
        seconds=round(seconds, 3),
    )
    return tested


def _common(
    ctx: PassContext, *, secrets: Mapping[str, bytes], cache_auth: RegistryAuth
) -> BuildRequest:
    """What the production build and the test stage's have in common (all but the tag and
    the target)."""
    app = ctx.app
    return BuildRequest(
        dockerfile=app.dockerfile,
        tag="",
        build_args=app.build_args,
        target="",
        labels={
            "org.opencontainers.image.revision": ctx.revision,
            "org.opencontainers.image.source": redact_url(app.repo),
            # Which app's images a build host may remove after its rollouts.
            APP_LABEL: app.name,
        },
        cache_from=_cache_sources(ctx),
        cache_auth=cache_auth,
        secrets=secrets,
    )


async def _build_beside(
    ctx: PassContext,
    context: BinaryIO,
    production: BuildRequest,
    stage: BuildRequest | None,
    *,
    then: Then | None,
    built: Callable[[], None],
) -> tuple[BuildResult, float, TestStage | None]:
    """The production image and the test stage built at once from one context: the
    production build's result and seconds, and the test stage's outcome.

    The test stage leads: the production build starts once the test stage's first step past
    FROM has (or it has ended). BuildKit (the engine's, release 20.10 at least) merges the
    steps two builds share into the build that reached them first, and then looks the first
    build's later steps up in that build's cache sources only. Led by the test stage, the
    shared steps and the test stage's own (the dev dependencies, which no deployed image
    holds) are found in the app's cache image on a host that never built the app; the
    production build's own steps after the shared ones come from the engine's cache or are
    done again.

    The production build decides the pass as it did when the test stage came after it: when
    it fails, the test stage is stopped and its outcome is not wanted; when it builds, the
    test stage's own error (an engine gone) is the pass's. A test stage that does not
    build is an outcome, not an error. What `then` does with the test stage counts as its
    build: it is stopped with it and its error is the pass's. `built` is called once both
    images are built, before `then` is done (the build slot is not needed for a test run).
    """
    shared = SharedFile(context)
    beside = None
    led, stage_built = asyncio.Event(), asyncio.Event()
    began = time.monotonic()
    try:
        if stage is not None:
            beside = asyncio.create_task(
                _test_stage(ctx, shared.reader(), stage, led=led, built=stage_built, then=then)
            )
            await led.wait()
        result = await build_image(ctx, shared.reader(), production)
        seconds = time.monotonic() - began
        if beside is not None:
            await stage_built.wait()
        built()
        tested = None if beside is None else await beside
    except BaseException:
        if beside is not None:
            await stop(beside)
        raise
    return result, seconds, tested


async def _test_stage(
    ctx: PassContext,
    context: BinaryIO,
    request: BuildRequest,
    *,
    led: asyncio.Event,
    built: asyncio.Event,
    then: Then | None,
) -> TestStage:
    """The test stage's build, then `then`; `led` is set once the build that follows may
    start, `built` once this build is over (built or not)."""
    began = time.monotonic()
    try:
        result = await build_image(ctx, context, request, on_first_step=led.set)
    except BuildFailed as exc:
        log.warning("test_build_failed", image=request.tag, target=request.target, error=str(exc))
        return TestStage(image=request.tag, failure=exc)
    finally:
        led.set()
        built.set()
    log.info(
        "test_build_finished",
        image=request.tag,
        image_id=result.image_id,
        cached_steps=result.cached_steps,
        seconds=round(time.monotonic() - began, 3),
    )
    made = TestStage(image=request.tag)
    return made if then is None else await then(made)


async def read_secrets(ctx: PassContext) -> Mapping[str, bytes]:
    """The app's build secrets, read now (with its own AWS identity) for one build."""
    if not ctx.app.build_secrets:
        return {}
    return await ctx.io.secrets.read(ctx.app.build_secrets)


async def build_image(
    ctx: PassContext,
    context: BinaryIO,
    request: BuildRequest,
    *,
    on_first_step: Callable[[], None] | None = None,
) -> BuildResult:
    """`request` built on the engine; a build whose secrets the engine's builder cannot mount
    needs a human, and says which app."""
    try:
        return await ctx.io.docker.build(context, request, on_first_step=on_first_step)
    except SecretsNeedBuildKit as exc:
        raise SecretsNeedBuildKit(f"app {ctx.app.name}: {exc}") from exc


def _cache_sources(ctx: PassContext) -> list[str]:
    """The images this app runs now, which any host built and pushed, and its test stage's
    cache image: their inline build cache lets a host that never built the app reuse their
    layers."""
    desired = ctx.observed.desired.image
    running = {image for image in ctx.observed.live.images.values() if image != str(desired)}
    prefix = f"{desired.registry}/{desired.repository}:"
    sources = sorted(image for image in running if image.startswith(prefix))
    cache = cache_image(ctx)
    return sources if cache is None else [*sources, cache]


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
