"""Judging metric analysis (SPEC 21): one measurement, a check, the set of checks."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.decisions.analysis import (
    CheckResult,
    Limits,
    Mark,
    Measurement,
    State,
    judge_all,
    judge_check,
    mark,
    next_due,
    results,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RATE = Limits(name="5xx-rate", query="prometheus sum(rate(http_5xx[1m]))", count=3, maximum=0.5)


def values(*taken: float | None, error_at: int | None = None) -> list[Measurement]:
    return [
        Measurement(
            at=T0 + timedelta(seconds=10 * (i + 1)),
            value=value,
            error="HTTP 503" if i == error_at else "",
        )
        for i, value in enumerate(taken)
    ]


@pytest.mark.parametrize(
    ("limits", "measurement", "expected"),
    [
        (RATE, Measurement(T0, 0.5), Mark.PASS),  # at the bound is within it
        (RATE, Measurement(T0, 0.51), Mark.FAIL),
        (Limits("up", "q", 1, minimum=1.0), Measurement(T0, 0.0), Mark.FAIL),
        (Limits("up", "q", 1, minimum=1.0), Measurement(T0, 1.0), Mark.PASS),
        (Limits("band", "q", 1, minimum=1.0, maximum=2.0), Measurement(T0, 2.5), Mark.FAIL),
        (RATE, Measurement(T0, None), Mark.NO_DATA),
        (RATE, Measurement(T0, math.nan), Mark.NO_DATA),  # 0/0 is no data, not "within"
        (RATE, Measurement(T0, 0.1, error="timeout"), Mark.ERROR),
    ],
)
def test_one_measurement_is_judged_against_its_bounds(
    limits: Limits, measurement: Measurement, expected: Mark
) -> None:
    """A value past max (or below min) fails; at a bound passes; no value or NaN is no
    data; an unanswered query is an error whatever value came with it."""
    assert mark(measurement, limits) == expected


def test_a_check_runs_until_it_has_count_measurements_then_passes() -> None:
    """Good values so far: running; the count reached: passed."""
    assert judge_check(RATE, values(0.1, 0.2)).state is State.RUNNING
    assert judge_check(RATE, values(0.1, 0.2, 0.0)).state is State.PASSED
    assert judge_check(RATE, []).state is State.RUNNING


def test_a_check_fails_once_failures_pass_its_limit_naming_check_query_and_values() -> None:
    """failure_limit 1: one value above max is tolerated, the second fails the check at once,
    before the count is reached; the reason names the check, its query and every value."""
    tolerant = replace(RATE, failure_limit=1, count=5)
    assert judge_check(tolerant, values(0.1, 0.9)).state is State.RUNNING
    verdict = judge_check(tolerant, values(0.1, 0.9, 1.25))
    assert verdict.state is State.FAILED
    assert verdict.reason == (
        "analysis 5xx-rate failed: 2 of 3 measurements failed (max 0.5, failure_limit 1): "
        "prometheus sum(rate(http_5xx[1m])) = [0.1, 0.9, 1.25]"
    )


def test_an_unanswered_query_counts_as_a_failure_never_a_pass() -> None:
    """A source that never answered within the interval is a failed measurement, said so."""
    verdict = judge_check(RATE, values(0.1, 0.1, 0.1, error_at=1))
    assert verdict.state is State.FAILED
    assert "[0.1, error, 0.1]" in verdict.reason and "(HTTP 503)" in verdict.reason


def test_no_data_fails_at_once_unless_on_no_data_is_pass() -> None:
    """on_no_data = "fail": one empty answer fails the check, whatever its failure_limit;
    on_no_data = "pass": it counts as a good measurement."""
    failing = replace(RATE, failure_limit=2)
    verdict = judge_check(failing, values(0.1, None))
    assert verdict.state is State.FAILED
    assert verdict.reason.startswith("analysis 5xx-rate failed: no data")
    assert verdict.reason.endswith("= [0.1, no data]")
    lenient = replace(RATE, no_data_passes=True)
    assert judge_check(lenient, values(None, None)).state is State.RUNNING
    assert judge_check(lenient, values(None, None, None)).state is State.PASSED


def test_the_release_fails_on_any_check_and_passes_on_all() -> None:
    """Two checks: running while either runs, failed as soon as one fails (its reason),
    passed when both passed."""
    floor = Limits(name="rps", query="cloudwatch AWS/ELB/RequestCount Sum/60s", count=2, minimum=1)
    assert judge_all({RATE: values(0.1, 0.1, 0.1), floor: values(5)}).state is State.RUNNING
    assert judge_all({RATE: values(0.1, 0.1, 0.1), floor: values(5, 6)}).state is State.PASSED
    failed = judge_all({RATE: values(0.1), floor: values(0.0)})
    assert failed.state is State.FAILED
    assert failed.reason.startswith("analysis rps failed: 1 of 1 measurements failed (min 1,")
    assert judge_all({}).state is State.PASSED  # no checks: nothing to wait for


def test_the_next_measurement_is_one_interval_after_the_last_or_the_start() -> None:
    """From the start, then from the last one taken: a daemon that was away measures once
    at once and keeps the interval from there."""
    assert next_due(T0, [], interval=30) == T0 + timedelta(seconds=30)
    taken = values(0.1, 0.2)
    assert next_due(T0, taken, interval=30) == taken[-1].at + timedelta(seconds=30)


def test_results_show_values_and_verdicts() -> None:
    """Status and history show each check's values (None for no data or no answer)."""
    assert results({RATE: values(0.1, None, 0.3, error_at=2)}) == (
        CheckResult(
            name="5xx-rate",
            query="prometheus sum(rate(http_5xx[1m]))",
            values=(0.1, None, None),
            verdict=State.FAILED,
        ),
    )
