"""Metric analysis (SPEC 21): an app's `analysis` checks, measured every `interval` from the
start of the bake (or of the rollout, where the service has no bake) for `count`
measurements, before the app is declared InSync; a failure rolls the release back and holds
it like a failed rollout, the check, its query and its values in the reason.

The analysis runs beside the watch of the rollout: a failure during the bake ends the watch
(the rollback replaces the deployment in flight); a rollout that succeeds waits for the
measurements still due. Verdicts are decisions/analysis.py's.

Each measurement is written to the app's memory (AnalysisRun) as it is taken, so a daemon
that restarts, or takes the app over, mid-analysis goes on from what was measured: a
rollout still in flight is watched and analysed again from those measurements; one found
in sync with its analysis unfinished (or never started: the attempt of the revision is
there, the run is not) is measured to its end before InSync is said. Measurements the
daemon missed while away are taken late, never counted as passes.

A source that does not answer (HTTP errors, timeouts) is asked again within the interval;
a measurement it never answered is a failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from reconciler.aio import backoff
from reconciler.aio.tasks import stop
from reconciler.app.stages.context import PassContext
from reconciler.app.stages.watch import Rollout, Sighting, Watched, watch
from reconciler.app.status import AnalysisView
from reconciler.config import AnalysisCheck
from reconciler.decisions.analysis import (
    AnalysisRun,
    CheckResult,
    Measurement,
    State,
    Verdict,
    judge_all,
    judge_check,
    mark,
    next_due,
    results,
)
from reconciler.decisions.model import Phase, utcnow
from reconciler.errors import MetricsRefused, MetricsUnavailable

log = structlog.get_logger("reconciler.pass")
# Waits between asks of a source that did not answer, within one measurement's interval.
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
# Of a measurement's interval, the share its asks may take: the rest is left for the next.
ASKING_SHARE = 0.9


async def watched(ctx: PassContext, rollout: Rollout) -> Watched:
    """Watch `rollout` and, with `analysis` checks, analyse it: how both ended (a failed
    analysis is a failed rollout, its reason the analysis')."""
    if not ctx.app.analysis:
        return await watch(ctx, rollout)
    run = run_for(ctx, rollout)
    await _keep(ctx, run)
    sighting = Sighting()
    ended = asyncio.Event()
    watcher = asyncio.create_task(watch(ctx, rollout, sighting=sighting))
    watcher.add_done_callback(lambda _: ended.set())
    analyser = asyncio.create_task(
        analyse(ctx, run, start=lambda: _start(rollout, sighting, ended))
    )
    try:
        await asyncio.wait({watcher, analyser}, return_when=asyncio.FIRST_COMPLETED)
        if not watcher.done():
            verdict = analyser.result()
            if verdict.state is State.FAILED:
                # During the bake: the rollback the caller sends replaces this deployment.
                await stop(watcher)
                return Watched(reason=verdict.reason)
            return await watcher  # passed already: the rollout's own verdict decides
        outcome = watcher.result()
        if not outcome.succeeded:
            await stop(analyser)
            return outcome
        verdict = await analyser
        return outcome if verdict.state is State.PASSED else Watched(reason=verdict.reason)
    finally:
        for task in (watcher, analyser):
            if not task.done():
                await stop(task)


async def owed(ctx: PassContext) -> Verdict | None:
    """For a pass that finds the revision in sync: the analysis its release still owes,
    measured now (a restart or a takeover mid-analysis, or before it began), or the failure
    of one that failed (with rollback = false the revision stays live, held); None when
    nothing is owed."""
    app, memory = ctx.app, ctx.memory
    if not app.analysis:
        return None
    run = memory.analysis
    if run is not None and run.revision == ctx.revision:
        if run.config_fingerprint == app.fingerprint() and run.state is not State.RUNNING:
            return None if run.state is State.PASSED else Verdict(run.state, run.reason)
        if run.config_fingerprint == app.fingerprint():
            ctx.report.phase(Phase.DEPLOYING)
            return await analyse(ctx, run, start=start_now)
    attempt = memory.attempt
    if (
        attempt is None
        or attempt.revision != ctx.revision
        or attempt.config_fingerprint != app.fingerprint()
    ):
        return None  # not a release of this daemon's: nothing was owed
    run = AnalysisRun(
        revision=ctx.revision,
        task_definition=attempt.task_definition,
        previous=attempt.previous,
        config_fingerprint=app.fingerprint(),
    )
    await _keep(ctx, run)
    ctx.report.phase(Phase.DEPLOYING)
    return await analyse(ctx, run, start=start_now)


def previous_of(ctx: PassContext) -> str | None:
    """What the analysed release replaced (to roll back to)."""
    run = ctx.memory.analysis
    return run.previous if run is not None and run.revision == ctx.revision else None


async def analyse(
    ctx: PassContext, run: AnalysisRun, *, start: Callable[[], Awaitable[datetime]]
) -> Verdict:
    """Measure the run's checks to a verdict, from `start()` unless it started already."""
    checks = ctx.app.analysis
    if run.started_at is None:
        run = dataclasses.replace(run, started_at=await start())
        await _keep(ctx, run)
    assert run.started_at is not None
    log.info(
        "analysis_started",
        checks=[c.name for c in checks],
        started_at=run.started_at.isoformat(),
        measured=sum(len(run.of(c.name)) for c in checks),
    )
    while True:
        verdict = judge_all({c.limits(): run.of(c.name) for c in checks})
        if verdict.state is not State.RUNNING:
            return await _finish(ctx, run, verdict)
        _show(ctx, run)
        due = {
            c.name: next_due(run.started_at, run.of(c.name), interval=c.interval)
            for c in checks
            if judge_check(c.limits(), run.of(c.name)).state is State.RUNNING
        }
        wait = (min(due.values()) - utcnow()).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)
        now = utcnow()
        taking = [c for c in checks if c.name in due and due[c.name] <= now]
        taken = await asyncio.gather(*(_measure(ctx, c, at=now) for c in taking))
        measurements = dict(run.measurements)
        for check, measurement in zip(taking, taken, strict=True):
            measurements[check.name] = (*run.of(check.name), measurement)
        run = dataclasses.replace(run, measurements=measurements)
        await _keep(ctx, run)


async def _measure(ctx: PassContext, check: AnalysisCheck, *, at: datetime) -> Measurement:
    """One measurement of `check`, asked until answered or its share of the interval is
    spent: a value, no data, or (never answered) an error."""
    metrics = ctx.io.metrics
    deadline = time.monotonic() + check.interval * ASKING_SHARE
    attempt = 0
    error = "no metric source opened"
    while metrics is not None:
        left = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(0.1, left)):
                value = await metrics.measure(check)
        except MetricsRefused as exc:
            error = str(exc)
            break
        except (MetricsUnavailable, TimeoutError) as exc:
            error = str(exc) or f"no answer within {check.interval * ASKING_SHARE:g}s"
            log.warning("analysis_source_unavailable", check=check.name, error=error)
            # At least a few asks within a short interval.
            delay = min(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)], check.interval / 4)
            attempt += 1
            if time.monotonic() + delay >= deadline:
                break
            await backoff.sleep(delay)
            continue
        measurement = Measurement(at=at, value=value)
        _logged(check, measurement)
        return measurement
    measurement = Measurement(at=at, error=error)
    _logged(check, measurement)
    return measurement


def _logged(check: AnalysisCheck, measurement: Measurement) -> None:
    log.info(
        "analysis_measured",
        check=check.name,
        value=measurement.value,
        mark=mark(measurement, check.limits()).value,
        error=measurement.error or None,
    )


async def _finish(ctx: PassContext, run: AnalysisRun, verdict: Verdict) -> Verdict:
    run = dataclasses.replace(run, state=verdict.state, reason=verdict.reason)
    await _keep(ctx, run)
    _show(ctx, run)
    if verdict.state is State.PASSED:
        log.info("analysis_passed", checks=[c.name for c in ctx.app.analysis])
    else:
        log.error("analysis_failed", reason=verdict.reason)
    return verdict


def run_for(ctx: PassContext, rollout: Rollout) -> AnalysisRun:
    """The run of this rollout that memory has unfinished (a restart goes on with it), or
    a new one."""
    app, found = ctx.app, ctx.memory.analysis
    if (
        found is not None
        and found.revision == ctx.revision
        and found.task_definition == rollout.task_definition
        and found.config_fingerprint == app.fingerprint()
        and found.state is State.RUNNING
    ):
        return found
    return AnalysisRun(
        revision=ctx.revision,
        task_definition=rollout.task_definition,
        previous=rollout.previous,
        config_fingerprint=app.fingerprint(),
    )


async def _start(rollout: Rollout, sighting: Sighting, ended: asyncio.Event) -> datetime:
    """When the measurements start: the bake's start where the service bakes (or the end of
    the watch, where its stages are not seen), else the rollout's."""
    await _first(sighting.looked, ended)
    if not ended.is_set() and not sighting.bake:
        return rollout.since if rollout.timed_here else utcnow()
    await _first(sighting.baking, ended)
    return utcnow()


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


async def start_now() -> datetime:
    return utcnow()


async def _keep(ctx: PassContext, run: AnalysisRun) -> None:
    """Into the app's memory, written through: a failed write is reported, and the
    analysis goes on (a restart then measures again what it cannot find)."""
    if ctx.memory.analysis != run:
        ctx.memory.analysis = run
        await ctx.session.save()


def _show(ctx: PassContext, run: AnalysisRun) -> None:
    checks = {c.limits(): run.of(c.name) for c in ctx.app.analysis}
    ctx.report.analysis(
        AnalysisView(
            revision=run.revision,
            state=run.state,
            checks=list(results(checks)),
            started_at=run.started_at,
            reason=run.reason,
        )
    )


def results_of(ctx: PassContext) -> tuple[CheckResult, ...] | None:
    """The checks' values and verdicts of this revision's analysis, for its history entry;
    None for an app without checks (or a release not analysed)."""
    run = ctx.memory.analysis
    if not ctx.app.analysis or run is None or run.revision != ctx.revision:
        return None
    return results({c.limits(): run.of(c.name) for c in ctx.app.analysis})
