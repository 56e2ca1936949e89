"""Pre-deploy: a one-off task of the new task definition before the service update; run once
per revision, awaited rather than started twice after a restart, and a failure holds the
revision with why."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import pytest

from reconciler.app.host import this_host
from reconciler.app.stages.pre_deploy import DONE_REMEMBERED, pre_deploy
from reconciler.decisions.model import Phase, PreDeployRun, TaskState, utcnow
from reconciler.errors import AwsUnavailable, ManifestError
from tests.support.passes import NEWER, REVISION, Pass, a_pass

MIGRATE = {"command": ["./manage.py", "migrate"]}


async def migrating(*, container: str = "", timeout: float = 60, **app: Any) -> tuple[Pass, str]:
    """A pass with a pre-deploy task, and the task definition registered for its revision."""
    run = a_pass(pre_deploy={**MIGRATE, "container": container, "timeout": timeout}, **app)
    run.observe()
    arn = await run.ecs.register_task_definition(
        {
            "family": "web",
            "containerDefinitions": [
                {
                    "name": "app",
                    "image": run.image(),
                    "logConfiguration": {
                        "logDriver": "awslogs",
                        "options": {"awslogs-group": "/ecs/web", "awslogs-stream-prefix": "web"},
                    },
                },
                {"name": "sidecar", "image": "public.test/sidecar:1"},
            ],
        },
        [],
    )
    return run, arn


def running_task(run: Pass, number: int = 7) -> str:
    """A task of the app that has not stopped (RUNNING), as a restart would find it."""
    arn = f"arn:aws:ecs:us-east-1:123456789012:task/cluster/{number}"
    run.ecs.tasks[arn] = TaskState(arn, "RUNNING", exit_codes={"app": None})
    return arn


async def test_without_a_pre_deploy_task_nothing_runs() -> None:
    run = a_pass()
    run.observe()
    assert await pre_deploy(run.ctx, task_definition=run.live_task_definition()) is True
    assert run.ecs.tasks == {}


async def test_a_passing_task_runs_once_on_the_managed_container_and_is_remembered() -> None:
    run, arn = await migrating()
    assert await pre_deploy(run.ctx, task_definition=arn) is True
    ((task, state),) = run.ecs.tasks.items()
    assert list(state.exit_codes) == ["app"]  # the first managed container
    (asked,) = run.ecs.task_requests
    assert (asked.task_definition, asked.container, asked.started_by) == (
        arn,
        "app",
        "reconciler/web",
    )
    assert list(asked.command) == list(MIGRATE["command"])
    assert REVISION in run.written.pre_deploy_done
    assert run.written.pre_deploy_run is None
    assert run.status.phase is Phase.MIGRATING
    assert run.timed("reconciler_pre_deploy_seconds") == 1

    assert await pre_deploy(run.ctx, task_definition=arn) is True  # a later pass
    assert list(run.ecs.tasks) == [task]


async def test_only_the_newest_successes_are_remembered() -> None:
    run, arn = await migrating()
    old = utcnow() - timedelta(days=1)
    for n in range(DONE_REMEMBERED):
        run.memory.pre_deploy_done[f"{n:040x}"] = old + timedelta(minutes=n)
    assert await pre_deploy(run.ctx, task_definition=arn) is True
    done = run.written.pre_deploy_done
    assert len(done) == DONE_REMEMBERED
    assert REVISION in done and f"{0:040x}" not in done and f"{1:040x}" in done


FAILURES = {
    "a non-zero exit": (1, "app exited 1"),
    "a task that stopped before the container ran": (
        None,
        "stopped before app ran: EssentialContainerExited",
    ),
}


@pytest.mark.parametrize(("exit_code", "says"), FAILURES.values(), ids=FAILURES.keys())
async def test_a_failed_task_holds_the_revision_and_says_where_its_logs_are(
    exit_code: int | None, says: str
) -> None:
    run, arn = await migrating()
    run.ecs.task_exit_code = exit_code
    assert await pre_deploy(run.ctx, task_definition=arn) is False
    (task,) = run.ecs.tasks
    hold = run.written.hold
    assert hold is not None and hold.revision == REVISION
    assert says in hold.reason
    assert hold.reason.endswith(
        f"; logs: CloudWatch group /ecs/web, stream web/app/{task.rsplit('/', 1)[-1]}"
    )
    assert REVISION not in run.written.pre_deploy_done
    assert run.results() == [(REVISION, "pre_deploy_failed")]
    assert run.status.phase is Phase.FAILED and run.status.last_error == hold.reason
    assert run.count("pre_deploy_failed") == 1


async def test_a_container_the_definition_lacks_is_refused_before_any_task() -> None:
    run, arn = await migrating(container="migrations")
    with pytest.raises(ManifestError, match="'migrations' is not a container of"):
        await pre_deploy(run.ctx, task_definition=arn)
    assert run.ecs.tasks == {}
    assert run.memory.pre_deploy_run is None and run.memory.hold is None
    assert run.status.phase is not Phase.MIGRATING


async def test_a_task_started_before_a_restart_is_awaited_not_started_again() -> None:
    run, arn = await migrating()
    task = running_task(run)
    run.memory.pre_deploy_run = PreDeployRun(revision=REVISION, task=task)
    run.ecs.tasks[task] = TaskState(task, "STOPPED", exit_codes={"app": 0})  # it ended meanwhile
    assert await pre_deploy(run.ctx, task_definition=arn) is True
    assert list(run.ecs.tasks) == [task]


async def test_a_task_whose_run_task_answer_was_lost_is_found_by_who_started_it() -> None:
    """Stopped between the note and RunTask's answer: the task found is the one awaited,
    and its deadline is the one set before the restart (here long past: it is stopped)."""
    run, arn = await migrating(timeout=60)
    task = running_task(run)
    run.memory.pre_deploy_run = PreDeployRun(
        revision=REVISION, task=None, at=utcnow() - timedelta(minutes=5), host=this_host()
    )
    # Not another 60s: the deadline passed while the daemon was down.
    assert await asyncio.wait_for(pre_deploy(run.ctx, task_definition=arn), 5) is False
    assert list(run.ecs.tasks) == [task]
    assert run.ecs.stopped == [task]
    hold = run.written.hold
    assert hold is not None
    assert f"pre-deploy task {task} did not finish within 60s and was stopped" in hold.reason


async def test_a_run_begun_on_another_host_is_timed_from_its_takeover_here() -> None:
    """Another host's wall clock may be minutes off: its stamp is not compared with ours."""
    run, arn = await migrating(timeout=60)
    task = running_task(run)
    run.memory.pre_deploy_run = PreDeployRun(
        revision=REVISION, task=task, at=utcnow() - timedelta(minutes=5), host="elsewhere"
    )
    waiting = asyncio.create_task(pre_deploy(run.ctx, task_definition=arn))
    await asyncio.sleep(0.2)
    assert not waiting.done() and run.ecs.stopped == []
    adopted = run.written.pre_deploy_run
    assert adopted is not None and adopted.host == this_host() and adopted.token
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting


async def test_runtask_sent_again_for_one_attempt_carries_the_same_token() -> None:
    """Noted, RunTask's answer lost, nothing running found: RunTask again with the token
    the attempt was noted with (ECS answers with the task it started, if it did)."""
    run, arn = await migrating()
    run.ecs.fail_next("run_task", AwsUnavailable("answer lost"))
    with pytest.raises(AwsUnavailable):
        await pre_deploy(run.ctx, task_definition=arn)
    noted = run.written.pre_deploy_run
    assert noted is not None and noted.task is None and len(noted.token) == 32
    assert await pre_deploy(run.ctx, task_definition=arn) is True
    assert [r.client_token for r in run.ecs.task_requests] == [noted.token]


async def test_a_note_for_another_revision_starts_a_task_of_this_one() -> None:
    run, arn = await migrating()
    stale = running_task(run)
    run.memory.pre_deploy_run = PreDeployRun(revision=NEWER, task=stale)
    assert await pre_deploy(run.ctx, task_definition=arn) is True
    assert len(run.ecs.tasks) == 2 and run.ecs.stopped == []


async def test_losing_sight_of_the_task_for_a_while_is_not_a_failure() -> None:
    run, arn = await migrating()
    run.ecs.fail_next("describe_task", AwsUnavailable("DescribeTasks: throttled"))
    assert await pre_deploy(run.ctx, task_definition=arn) is True
    assert run.memory.hold is None


async def test_a_task_that_cannot_be_started_holds_nothing_and_is_let_through() -> None:
    """The note written before RunTask stays, so a retry looks for the task first."""
    run, arn = await migrating()
    run.ecs.fail_next("run_task", AwsUnavailable("RunTask: capacity unavailable"))
    with pytest.raises(AwsUnavailable):
        await pre_deploy(run.ctx, task_definition=arn)
    assert run.memory.hold is None and run.results() == []
    note = run.written.pre_deploy_run
    assert note is not None and note.revision == REVISION and note.task is None
