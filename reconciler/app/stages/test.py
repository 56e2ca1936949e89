"""Test: the app's test command, in a container of the built image, before anything is pushed.

With `test.target`, the command runs in an image of that Dockerfile stage instead (built
locally, never pushed), so dev dependencies stay out of the production image. Output goes
to the log line by line (`test_output`); its tail is kept for status and history. A failed
or timed-out test holds the revision at once: tests are not retried automatically.
"""

from __future__ import annotations

import time

import structlog

from reconciler.adapters.values import BuildRequest, ContainerRun
from reconciler.app.stages.build import build_image, read_secrets
from reconciler.app.stages.context import PassContext
from reconciler.decisions.model import Hold, Phase, Result
from reconciler.errors import BuildFailed

log = structlog.get_logger("reconciler.pass")
TAIL_IN_ERROR = 20


def stage_image(app: str, revision: str) -> str:
    """The local tag of a test stage's image (never pushed)."""
    return f"reconciler-test/{app}:{revision}"


async def run_test(ctx: PassContext) -> bool:
    """True when there is no test or it passed; False when it failed (and the revision is
    held)."""
    gate = ctx.app.test
    if gate is None:
        return True
    image = str(ctx.observed.desired.image)
    ctx.report.phase(Phase.TESTING)
    if gate.target:
        built = await _build_test_stage(ctx, gate.target)
        if built is None:
            return False
        image = built
    log.info("test_started", image=image, command=list(gate.command))
    began = time.monotonic()
    run = await ctx.io.docker.run(
        ContainerRun(
            image=image,
            command=gate.command,
            env=gate.env,
            network=gate.network,
            timeout=gate.timeout,
            memory_mb=gate.memory_mb,
            cpus=gate.cpus,
            pids=gate.pids,
            read_only=gate.read_only,
            user=gate.user,
        ),
        on_line=lambda line: log.info("test_output", line=line),
    )
    ctx.report.test_took(time.monotonic() - began)
    if run.passed:
        log.info("test_passed")
        return True
    if run.timed_out:
        reason = f"test timed out after {gate.timeout:g}s"
    elif run.oom_killed:
        reason = (
            f"test ran out of memory (memory_mb = {gate.memory_mb}): "
            f"{' '.join(gate.command)} exited {run.exit_code}"
        )
    else:
        reason = f"test failed: {' '.join(gate.command)} exited {run.exit_code}"
    tail = "\n".join(run.tail[-TAIL_IN_ERROR:])
    detail = f"{reason}\n{tail}".strip()
    log.error("test_failed", reason=reason)
    await _hold(ctx, reason=detail)
    return False


async def _build_test_stage(ctx: PassContext, target: str) -> str | None:
    """The test stage's image; None when it does not build (the revision is then held)."""
    app, revision = ctx.app, ctx.revision
    tag = stage_image(app.name, revision)
    request = BuildRequest(
        dockerfile=app.dockerfile,
        tag=tag,
        build_args=app.build_args,
        target=target,
        labels={"org.opencontainers.image.revision": revision},
        secrets=await read_secrets(ctx),
    )
    context = None
    try:
        context = await ctx.io.git.export_context(
            ctx.session.source, commit=revision, context=app.context, dockerfile=app.dockerfile
        )
        async with ctx.session.build_slots:
            await build_image(ctx, context, request)
    except BuildFailed as exc:
        reason = f"test.target {target!r} did not build: {exc}"
        log.error("test_failed", reason=reason)
        await _hold(ctx, reason="\n".join([reason, *exc.log_tail[-TAIL_IN_ERROR:]]))
        return None
    finally:
        if context is not None:
            context.close()
    return tag


async def _hold(ctx: PassContext, *, reason: str) -> None:
    memory = ctx.memory
    memory.hold = Hold(
        revision=ctx.revision, reason=reason, config_fingerprint=ctx.app.fingerprint()
    )
    await ctx.session.save()
    await ctx.report.outcome(
        revision=ctx.revision, result=Result.TEST_FAILED, started_at=ctx.started_at, error=reason
    )
    ctx.report.failed(reason)
    ctx.report.count(Result.TEST_FAILED.value)
