"""Test: the app's test command, in a container of the built image, before anything is pushed.

With `test.target`, the command runs in an image of that Dockerfile stage instead, so dev
dependencies stay out of the production image. That stage is built beside the production
image (build.py), and its test runs as soon as it is built, while the production build goes
on (`run_beside`); once it passed, the stage's image is pushed as the app's cache image
(push.keeping_as_cache, beside the rest of the deploy). Its verdict is judged only once the
production image is built, so a failed production build is counted as one whatever the test
said, as when the test came after it. A test stage that did not build holds the revision as
a failed test does.

Output goes to the log line by line (`test_output`); its tail is kept for status and
history. A failed or timed-out test holds the revision at once: tests are not retried
automatically.
"""

from __future__ import annotations

import dataclasses
import time

import structlog

from reconciler.adapters.containers import SIGKILLED
from reconciler.adapters.values import ContainerRun
from reconciler.app.stages.build import TestStage
from reconciler.app.stages.context import PassContext
from reconciler.decisions.model import Hold, Phase, Result, TestRun

log = structlog.get_logger("reconciler.pass")
TAIL_IN_ERROR = 20


async def run_beside(ctx: PassContext, stage: TestStage) -> TestStage:
    """The test run in the test stage's image, as soon as that is built; `run_test` judges
    it."""
    return dataclasses.replace(stage, run=await _run(ctx, stage.image))


async def run_test(ctx: PassContext, stage: TestStage | None = None) -> bool:
    """True when there is no test or it passed; False when it failed (and the revision is
    held). `stage` is what build() made of the test stage, for a test with a target."""
    gate = ctx.app.test
    if gate is None:
        return True
    ctx.report.phase(Phase.TESTING)
    if gate.target:
        if stage is None:
            raise AssertionError(f"test.target {gate.target!r}: the build made no test stage")
        if stage.failure is not None:
            exc = stage.failure
            unbuilt = f"test.target {gate.target!r} did not build: {exc}"
            log.error("test_failed", reason=unbuilt)
            await _hold(ctx, reason="\n".join([unbuilt, *exc.log_tail[-TAIL_IN_ERROR:]]))
            return False
        if stage.run is None:
            stage = await run_beside(ctx, stage)
        assert stage.run is not None
        run = stage.run
    else:
        run = await _run(ctx, str(ctx.observed.desired.image))
    reason = _failure(ctx, run)
    if reason is None:
        log.info("test_passed")
        return True
    tail = "\n".join(run.tail[-TAIL_IN_ERROR:])
    log.error("test_failed", reason=reason)
    await _hold(ctx, reason=f"{reason}\n{tail}".strip())
    return False


async def _run(ctx: PassContext, image: str) -> TestRun:
    """The test command in a new container of `image`, its output logged line by line."""
    gate = ctx.app.test
    assert gate is not None
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
    return run


def _failure(ctx: PassContext, run: TestRun) -> str | None:
    """Why the run failed, in one line; None when it passed."""
    gate = ctx.app.test
    assert gate is not None
    if run.passed:
        return None
    if run.timed_out:
        return f"test timed out after {gate.timeout:g}s"
    if run.oom_killed:
        return (
            f"test ran out of memory (memory_mb = {gate.memory_mb}): "
            f"{' '.join(gate.command)} exited {run.exit_code}"
        )
    failed = f"test failed: {' '.join(gate.command)} exited {run.exit_code}"
    if run.exit_code == SIGKILLED:
        # The engine did not say the kernel's OOM killer did it, which it may miss: say
        # what else a SIGKILL in a confined test most likely is.
        failed += f" (SIGKILL: by the kernel at the memory limit, memory_mb = {gate.memory_mb}?)"
    return failed


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
