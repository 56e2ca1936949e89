"""The analysis stage (SPEC 21): checks measured beside the rollout's watch, a failure
ending it with the check, query and values; measurements kept in the app's memory so a
restart goes on from them and never reports a pass it did not measure."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from reconciler.app.stages.analysis import owed, watched
from reconciler.app.stages.watch import Watched
from reconciler.config import AnalysisCheck
from reconciler.decisions.analysis import AnalysisRun, Measurement, State
from reconciler.decisions.model import Attempt, utcnow
from reconciler.errors import MetricsRefused, MetricsUnavailable
from tests.support.passes import REVISION, Pass, a_pass

STUCK = 10**9  # DescribeServices calls before the fake rollout completes: never
INTERVAL = 0.05  # seconds: below the config's floor, so the tests take little time


def check(name: str = "5xx", **keys: object) -> AnalysisCheck:
    table = {
        "name": name,
        "prometheus": {"url": "http://prometheus:9090", "query": "sum(rate(http_5xx[1m]))"},
        "max": 0.5,
        "interval": "1s",
        "count": 3,
        **keys,
    }
    return AnalysisCheck.model_validate(table).model_copy(update={"interval": INTERVAL})


def analysed(*checks: AnalysisCheck) -> Pass:
    run = a_pass()
    run.session.app = run.app.model_copy(update={"analysis": checks or (check(),)})
    return run


async def test_a_healthy_release_passes_after_count_measurements() -> None:
    """The rollout succeeds and the check measures 3 good values: the watch's success
    stands; memory, status keep the values and the verdict."""
    run = analysed()
    run.sources.answer("5xx", 0.1, 0.2)
    rollout = await run.roll_out(settle_after=1)
    assert await watched(run.ctx, rollout) == Watched(succeeded=True)
    kept = run.written.analysis
    assert kept is not None and kept.state is State.PASSED
    assert [m.value for m in kept.of("5xx")] == [0.1, 0.2, 0.0]
    view = run.status.analysis
    assert view is not None and view.state is State.PASSED
    assert view.checks[0].values == (0.1, 0.2, 0.0)


async def test_a_value_past_max_during_the_bake_ends_the_watch_as_a_failure() -> None:
    """The rollout never ends by itself here (a long bake): the second value above max
    fails the analysis, which ends the watch with the check, its query and its values."""
    run = analysed()
    run.sources.answer("5xx", 0.1, 3.5)
    rollout = await run.roll_out(settle_after=STUCK)
    ended = await watched(run.ctx, rollout)
    assert not ended.succeeded
    assert ended.reason == (
        "analysis 5xx failed: 1 of 2 measurements failed (max 0.5, failure_limit 0): "
        "prometheus sum(rate(http_5xx[1m])) = [0.1, 3.5]"
    )
    kept = run.written.analysis
    assert kept is not None and kept.state is State.FAILED


async def test_a_failed_rollout_stops_the_analysis() -> None:
    """The watch's failure is the verdict: the analysis stops measuring."""
    run = analysed(check(count=1000))
    rollout = await run.roll_out(settle_after=STUCK)
    run.session.app = run.app.model_copy(update={"rollout_timeout": 0.1})
    ended = await watched(run.ctx, rollout)
    assert "did not complete" in ended.reason
    asked = run.sources.asked["5xx"]
    await asyncio.sleep(INTERVAL * 3)
    assert run.sources.asked["5xx"] == asked


async def test_a_source_that_does_not_answer_is_asked_again_within_the_interval() -> None:
    """Two unanswered asks, then an answer: one good measurement, not a failure."""
    run = analysed(check(count=1))
    down = MetricsUnavailable("Prometheus answered HTTP 503")
    run.sources.answer("5xx", down, down, 0.2)
    rollout = await run.roll_out(settle_after=1)
    assert await watched(run.ctx, rollout) == Watched(succeeded=True)
    kept = run.written.analysis
    assert kept is not None and [m.value for m in kept.of("5xx")] == [0.2]
    assert run.sources.asked["5xx"] == 3


async def test_a_source_that_never_answers_fails_never_passes() -> None:
    """Down for the whole interval: the measurement is an error, and an error is a failure
    (failure_limit 0), with what the source said."""
    run = analysed(check(count=1))
    run.sources.answer("5xx", *[MetricsUnavailable("Prometheus answered HTTP 503")] * 1000)
    rollout = await run.roll_out(settle_after=1)
    ended = await watched(run.ctx, rollout)
    assert not ended.succeeded
    assert "= [error] (Prometheus answered HTTP 503)" in ended.reason


async def test_a_refused_query_fails_at_once() -> None:
    """A query the source refuses is not asked again: the measurement fails."""
    run = analysed(check(count=1))
    run.sources.answer("5xx", MetricsRefused("the query gives 3 series, not one"))
    rollout = await run.roll_out(settle_after=1)
    ended = await watched(run.ctx, rollout)
    assert "(the query gives 3 series, not one)" in ended.reason
    assert run.sources.asked["5xx"] == 1


async def test_no_data_fails_unless_on_no_data_is_pass() -> None:
    """An empty answer fails the release with on_no_data = "fail"; passes with "pass"."""
    strict = analysed(check(count=2))
    strict.sources.steady = None
    ended = await watched(strict.ctx, await strict.roll_out(settle_after=1))
    assert "analysis 5xx failed: no data" in ended.reason
    lenient = analysed(check(count=2, on_no_data="pass"))
    lenient.sources.steady = None
    assert await watched(lenient.ctx, await lenient.roll_out(settle_after=1)) == Watched(
        succeeded=True
    )


def unfinished(run: Pass, *values: float) -> AnalysisRun:
    start = utcnow() - timedelta(seconds=1)
    found = AnalysisRun(
        revision=REVISION,
        task_definition=run.live_task_definition(),
        previous="arn:aws:ecs:task-definition/web:1",
        config_fingerprint=run.app.fingerprint(),
        started_at=start,
        measurements={"5xx": tuple(Measurement(at=start, value=v) for v in values)},
    )
    run.memory.analysis = found
    return found


async def test_a_restart_mid_analysis_measures_only_what_is_left() -> None:
    """Two of three measured before the restart: the release found live takes one more,
    then passes; nothing measured is forgotten or made up."""
    run = analysed()
    unfinished(run, 0.1, 0.2)
    verdict = await owed(run.ctx)
    assert verdict is not None and verdict.state is State.PASSED
    assert run.sources.asked["5xx"] == 1
    kept = run.written.analysis
    assert kept is not None and [m.value for m in kept.of("5xx")] == [0.1, 0.2, 0.0]


async def test_a_restart_mid_analysis_with_the_source_down_never_passes() -> None:
    """After a restart the source is down: the release fails, it is not taken as passed."""
    run = analysed()
    unfinished(run, 0.1, 0.2)
    run.sources.answer("5xx", *[MetricsUnavailable("Prometheus unreachable")] * 1000)
    verdict = await owed(run.ctx)
    assert verdict is not None and verdict.state is State.FAILED


async def test_a_release_found_live_before_its_analysis_began_is_analysed() -> None:
    """The daemon stopped after UpdateService, before any measurement (its attempt is
    there, no run): the release is measured now; a live revision without an attempt of ours
    or with a finished analysis owes nothing."""
    run = analysed()
    assert await owed(run.ctx) is None
    run.memory.attempt = Attempt(
        revision=REVISION,
        task_definition=run.live_task_definition(),
        previous="arn:aws:ecs:task-definition/web:1",
        config_fingerprint=run.app.fingerprint(),
    )
    verdict = await owed(run.ctx)
    assert verdict is not None and verdict.state is State.PASSED
    assert run.sources.asked["5xx"] == 3
    assert await owed(run.ctx) is None
    assert run.sources.asked["5xx"] == 3
