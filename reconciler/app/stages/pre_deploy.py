"""Pre-deploy: a one-off ECS task of the new task definition (a migration, say), before the
service is updated.

RunTask with a command override on the chosen container, launched like the service (its
launch type or capacity providers, its network configuration), `startedBy` naming the app.
Awaited until STOPPED; success is that container's exit code 0. Anything else (a non-zero
exit, a task that never started, the timeout, after which the task is stopped) holds the
revision and leaves the service untouched. A success is remembered per revision, so a
restart between it and the service update does not run it again; a task found running after
a restart is awaited, not started twice, and RunTask carries a clientToken kept with the
attempt, so a retry or a new owner's RunTask answers with the task already started.
"""

from __future__ import annotations

import dataclasses
import time

import structlog

from reconciler.adapters.values import TaskRunRequest
from reconciler.app import tasks
from reconciler.app.host import this_host
from reconciler.app.stages.context import PassContext
from reconciler.decisions.model import (
    Hold,
    Phase,
    PreDeployRun,
    Result,
    run_token,
    utcnow,
)
from reconciler.errors import ManifestError

log = structlog.get_logger("reconciler.pass")
DONE_REMEMBERED = 20  # revisions whose pre-deploy success is kept


def started_by(app: str) -> str:
    return tasks.started_by("reconciler", app)


async def pre_deploy(ctx: PassContext, *, task_definition: str) -> bool:
    """True when there is nothing to run, it ran before, or it succeeded now; False when it
    failed (and the revision is held)."""
    spec, memory, revision = ctx.app.pre_deploy, ctx.memory, ctx.revision
    if spec is None or revision in memory.pre_deploy_done:
        return True
    definition, _tags = await ctx.io.ecs.task_definition(task_definition)
    wanted = spec.container or next(iter(ctx.observed.live.images))
    try:
        container = tasks.container_of(definition, wanted=wanted, arn=task_definition)
    except ManifestError as exc:
        raise ManifestError(f"pre_deploy.container {exc}") from exc
    ctx.report.phase(Phase.MIGRATING)
    began = time.monotonic()
    task = await _start_or_find(ctx, task_definition=task_definition, container=container)
    state = await tasks.await_stopped(
        ctx.io.ecs,
        cluster=ctx.app.cluster,
        task=task,
        limit=spec.timeout - _elapsed(ctx),
        polls=ctx.session.timings.rollout_polls,
        reason="reconciler: pre-deploy task timed out",
    )
    ctx.report.pre_deploy_took(time.monotonic() - began)
    memory.pre_deploy_run = None
    if state is not None and state.exit_codes.get(container) == 0:
        memory.pre_deploy_done[revision] = utcnow()
        for old in sorted(memory.pre_deploy_done, key=memory.pre_deploy_done.__getitem__)[
            :-DONE_REMEMBERED
        ]:
            del memory.pre_deploy_done[old]
        await ctx.session.save()
        log.info("pre_deploy_succeeded", task=task)
        return True
    reason = tasks.failure(
        state, what="pre-deploy task", task=task, container=container, timeout=spec.timeout
    )
    where = tasks.log_location(definition, container=container, task=task)
    if where is not None:
        reason += f"; logs: {where}"
    log.error("pre_deploy_failed", task=task, reason=reason)
    memory.hold = Hold(revision=revision, reason=reason, config_fingerprint=ctx.app.fingerprint())
    await ctx.session.save()
    await ctx.report.outcome(
        revision=revision, result=Result.PRE_DEPLOY_FAILED, started_at=ctx.started_at, error=reason
    )
    ctx.report.failed(reason)
    ctx.report.count(Result.PRE_DEPLOY_FAILED.value)
    return False


def _elapsed(ctx: PassContext) -> float:
    run = ctx.memory.pre_deploy_run
    if run is None or run.revision != ctx.revision or run.host != this_host():
        return 0.0
    return max(0.0, (utcnow() - run.at).total_seconds())


async def _start_or_find(ctx: PassContext, *, task_definition: str, container: str) -> str:
    app, memory, io = ctx.app, ctx.memory, ctx.io
    run = memory.pre_deploy_run
    if run is not None and run.revision == ctx.revision:
        run = await _adopt(ctx, run)
        if run.task is not None:
            log.info("pre_deploy_found", task=run.task)
            return run.task
        # Stopped between the note and RunTask's answer: the task may exist.
        found = await io.ecs.find_tasks(cluster=app.cluster, started_by=started_by(app.name))
        if found:
            log.info("pre_deploy_found", task=found[0])
            memory.pre_deploy_run = dataclasses.replace(run, task=found[0])
            await ctx.session.save()
            return found[0]
        # Not running (any more): RunTask again with the same token answers with the task
        # it started, if it did, instead of starting a second.
    else:
        at = utcnow()
        run = PreDeployRun(
            revision=ctx.revision,
            at=at,
            token=run_token(app.name, ctx.revision, at),
            host=this_host(),
        )
        memory.pre_deploy_run = run
        await ctx.session.save()
    spec = app.pre_deploy
    assert spec is not None
    request = TaskRunRequest(
        cluster=app.cluster,
        task_definition=task_definition,
        container=container,
        command=spec.command,
        started_by=started_by(app.name),
        launch=ctx.observed.live.service.launch,
        client_token=run.token,
    )
    task = await io.ecs.run_task(request)
    memory.pre_deploy_run = dataclasses.replace(run, task=task)
    await ctx.session.save()
    log.info("pre_deploy_started", task=task, command=list(spec.command), container=container)
    return task


async def _adopt(ctx: PassContext, run: PreDeployRun) -> PreDeployRun:
    """The run as this daemon goes on with it: its timeout counted on this host's clock from
    now when another host began it, and a token for a run noted before tokens were kept."""
    adopted = run
    if run.host != this_host():
        adopted = dataclasses.replace(adopted, at=utcnow(), host=this_host())
    if not run.token:
        adopted = dataclasses.replace(adopted, token=run_token(ctx.app.name, run.revision, run.at))
    if adopted != run:
        ctx.memory.pre_deploy_run = adopted
        await ctx.session.save()
    return adopted
