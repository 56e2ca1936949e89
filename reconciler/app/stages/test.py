"""Test: the app's test command, in a container of the built image, before anything is pushed.

With `test.target`, the command runs in an image of that Dockerfile stage instead (built
beside the production image by build.py), so dev dependencies stay out of the production
image; a test stage that did not build holds the revision as a failed test does. Output goes
to the log line by line (`test_output`); its tail is kept for status and history. A failed
or timed-out test holds the revision at once: tests are not retried automatically.
"""

from __future__ import annotations

import time

import structlog

from reconciler.adapters.values import ContainerRun
from reconciler.app.stages.build import TestStage
from reconciler.app.stages.context import PassContext
from reconciler.decisions.model import Hold, Phase, Result

log = structlog.get_logger("reconciler.pass")
TAIL_IN_ERROR = 20


async def run_test(ctx: PassContext, stage: TestStage | None = None) -> bool:
    """True when there is no test or it passed; False when it failed (and the revision is
    held). `stage` is what build() made of the test stage, for a test with a target."""
    gate = ctx.app.test
    if gate is None:
        return True
    image = str(ctx.observed.desired.image)
    ctx.report.phase(Phase.TESTING)
    if gate.target:
        if stage is None:
            raise AssertionError(f"test.target {gate.target!r}: the build made no test stage")
        if stage.failure is not None:
            exc = stage.failure
            reason = f"test.target {gate.target!r} did not build: {exc}"
            log.error("test_failed", reason=reason)
            await _hold(ctx, reason="\n".join([reason, *exc.log_tail[-TAIL_IN_ERROR:]]))
            return False
        image = stage.image
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
