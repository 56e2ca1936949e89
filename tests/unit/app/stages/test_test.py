"""Test: the app's test command in a container before anything is pushed; a failure or a
timeout holds the revision at once, with the output's tail as the reason."""

from __future__ import annotations

from dataclasses import replace

import pytest
from structlog.testing import capture_logs

from reconciler.app.stages.build import TestStage, stage_image
from reconciler.app.stages.test import run_beside, run_test
from reconciler.decisions.model import Phase, TestRun
from reconciler.errors import BuildFailed, DockerUnavailable
from tests.support.passes import REVISION, Pass, a_pass

GATE = {"command": ["npm", "test"], "timeout": 5}


def gated(**gate: object) -> Pass:
    run = a_pass(test={**GATE, **gate})
    run.observe()
    return run


async def test_without_a_test_command_nothing_runs() -> None:
    run = a_pass()
    run.observe()
    assert await run_test(run.ctx) is True
    assert run.docker.runs == []
    assert run.status.phase is Phase.PENDING


async def test_a_passing_test_runs_in_the_built_image_and_holds_nothing() -> None:
    run = gated()
    run.docker.test_result = TestRun(exit_code=0, timed_out=False, tail=("12 passing",))
    with capture_logs() as logged:
        assert await run_test(run.ctx) is True
    assert run.docker.runs == [run.image()]
    assert run.status.phase is Phase.TESTING
    assert run.memory.hold is None
    assert run.timed("reconciler_test_seconds") == 1
    assert [e["line"] for e in logged if e["event"] == "test_output"] == ["12 passing"]


FAILURES = {
    "a non-zero exit": (TestRun(exit_code=1, timed_out=False, tail=()), "npm test exited 1"),
    "a timeout": (TestRun(exit_code=None, timed_out=True, tail=()), "test timed out after 5s"),
    "an OOM kill": (
        TestRun(exit_code=137, timed_out=False, tail=(), oom_killed=True),
        "test ran out of memory (memory_mb = 1024): npm test exited 137",
    ),
    "a SIGKILL the engine did not call an OOM kill": (
        TestRun(exit_code=137, timed_out=False, tail=()),
        "npm test exited 137 (SIGKILL: by the kernel at the memory limit, memory_mb = 1024?)",
    ),
}


@pytest.mark.parametrize(("result", "reason"), FAILURES.values(), ids=FAILURES.keys())
async def test_a_failed_test_holds_the_revision_with_the_tail_of_its_output(
    result: TestRun, reason: str
) -> None:
    run = gated()
    output = tuple(f"line {n:02}" for n in range(30))
    run.docker.test_result = replace(result, tail=output)
    assert await run_test(run.ctx) is False
    hold = run.written.hold
    assert hold is not None and hold.revision == REVISION
    assert hold.config_fingerprint == run.app.fingerprint()
    assert reason in hold.reason
    assert "line 10" in hold.reason and "line 29" in hold.reason  # the last twenty lines
    assert "line 09" not in hold.reason
    assert run.results() == [(REVISION, "test_failed")]
    assert run.status.phase is Phase.FAILED
    assert run.status.last_error == hold.reason
    assert run.count("test_failed") == 1


async def test_the_test_container_gets_the_configured_limits() -> None:
    run = gated(memory_mb=256, cpus=0.5, pids=64, read_only=False, user="1000")
    assert await run_test(run.ctx) is True
    [request] = run.docker.run_requests
    limits = (request.memory_mb, request.cpus, request.pids, request.read_only, request.user)
    assert limits == (256, 0.5, 64, False, "1000")


async def test_a_test_target_runs_the_test_in_the_stage_the_build_made() -> None:
    """Run now when it was not beside the build."""
    run = gated(target="test")
    local = stage_image("web", REVISION)
    assert await run_test(run.ctx, TestStage(image=local)) is True
    assert run.docker.runs == [local]
    assert run.docker.pushes == []


async def test_a_test_run_beside_the_build_is_judged_not_run_again() -> None:
    run = gated(target="test")
    local = stage_image("web", REVISION)
    failed = TestRun(exit_code=1, timed_out=False, tail=("1 failing",))
    assert await run_test(run.ctx, TestStage(image=local, run=failed)) is False
    assert run.docker.runs == []
    hold = run.written.hold
    assert hold is not None and hold.reason == "test failed: npm test exited 1\n1 failing"
    assert run.results() == [(REVISION, "test_failed")]


@pytest.mark.parametrize("passes", [True, False], ids=["passed", "failed"])
async def test_beside_the_build_the_stage_is_tested_and_nothing_judged(passes: bool) -> None:
    """Nothing is held or pushed there: run_test judges once the production image is built."""
    run = gated(target="test")
    local = stage_image("web", REVISION)
    run.docker.test_result = TestRun(exit_code=0 if passes else 1, timed_out=False, tail=())
    stage = await run_beside(run.ctx, TestStage(image=local))
    assert stage == TestStage(image=local, run=run.docker.test_result)
    assert run.docker.runs == [local]
    assert run.docker.pushes == []
    assert run.memory.hold is None and run.results() == []


async def test_a_test_target_that_did_not_build_holds_the_revision_without_a_run() -> None:
    run = gated(target="test")
    failure = BuildFailed("no stage test", log_tail=["ERROR: target"])
    stage = TestStage(image=stage_image("web", REVISION), failure=failure)
    assert await run_test(run.ctx, stage) is False
    assert run.docker.runs == []
    hold = run.written.hold
    assert hold is not None
    assert hold.reason == "test.target 'test' did not build: no stage test\nERROR: target"
    assert run.results() == [(REVISION, "test_failed")]
    assert run.status.phase is Phase.FAILED


async def test_an_engine_that_cannot_be_reached_holds_nothing() -> None:
    """Transient: the pass is retried; the revision did not fail its test."""
    run = gated()
    run.docker.fail_next("run", DockerUnavailable("docker.sock: connection refused"))
    with pytest.raises(DockerUnavailable):
        await run_test(run.ctx)
    assert run.memory.hold is None
    assert run.results() == []
    assert run.count("test_failed") == 0
